//! `models:/…` URIs: `models:/NAME@ALIAS`, `models:/NAME/STAGE`, `models:/NAME/VERSION`.

use crate::error::{Error, Result};

/// What a `models:/` URI points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelUri {
    /// `models:/NAME@ALIAS`.
    Alias {
        /// Registered model name.
        name: String,
        /// Alias.
        alias: String,
    },
    /// `models:/NAME/STAGE`: the newest version in that stage.
    Stage {
        /// Registered model name.
        name: String,
        /// Stage name as stored (`None`, `Staging`, `Production`, `Archived`).
        stage: &'static str,
    },
    /// `models:/NAME/VERSION`.
    Version {
        /// Registered model name.
        name: String,
        /// Version number.
        version: i64,
    },
}

/// Stage names as stored, in proto enum order.
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

impl ModelUri {
    /// The registered model's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Alias { name, .. } | Self::Stage { name, .. } | Self::Version { name, .. } => name,
        }
    }

    /// Parses a URI; errors name the `uri` field.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |message: &str| Error::invalid("uri", format!("{text:?}: {message}"));
        let Some(rest) = text.strip_prefix("models:/") else {
            return Err(bad("expected models:/NAME@ALIAS, models:/NAME/STAGE or models:/NAME/VERSION"));
        };
        if let Some((name, alias)) = rest.split_once('@') {
            if name.is_empty() || alias.is_empty() || alias.contains('/') {
                return Err(bad("expected models:/NAME@ALIAS"));
            }
            return Ok(Self::Alias { name: name.to_owned(), alias: alias.to_owned() });
        }
        let Some((name, selector)) = rest.rsplit_once('/') else {
            return Err(bad("missing @ALIAS, /STAGE or /VERSION after the model name"));
        };
        if name.is_empty() || selector.is_empty() {
            return Err(bad("empty model name or selector"));
        }
        if let Ok(version) = selector.parse::<i64>() {
            if version < 1 {
                return Err(bad("versions start at 1"));
            }
            return Ok(Self::Version { name: name.to_owned(), version });
        }
        match STAGES.iter().find(|s| s.eq_ignore_ascii_case(selector)) {
            Some(stage) => Ok(Self::Stage { name: name.to_owned(), stage }),
            None => Err(bad(
                "the part after the last / must be a version number or a stage (None, Staging, Production, Archived)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            ModelUri::parse("models:/trip_duration@staging").ok(),
            Some(ModelUri::Alias { name: "trip_duration".into(), alias: "staging".into() })
        );
        assert_eq!(
            ModelUri::parse("models:/trip_duration/production").ok(),
            Some(ModelUri::Stage { name: "trip_duration".into(), stage: "Production" })
        );
        assert_eq!(
            ModelUri::parse("models:/trip_duration/3").ok(),
            Some(ModelUri::Version { name: "trip_duration".into(), version: 3 })
        );
    }

    #[test]
    fn bad_uris_say_what_is_expected() {
        for bad in ["runs:/abc/model", "models:/", "models:/x", "models:/x/0", "models:/x/Later", "models:/@a"] {
            let err = ModelUri::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("uri: "), "{err}");
        }
    }
}
