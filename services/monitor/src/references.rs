//! Reference profiles: what each window is compared with. A window is compared with the profile
//! saved in the artifact of the model version that answered most of its rows, fetched through
//! the registry once and cached; `--reference FILE` gives a fixed one (and the fallback for
//! records of unregistered models).

use std::collections::HashMap;
use std::sync::Arc;

use lightops_api::registry::v1 as registry;
use lightops_ml::profile::Profile;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Finds and caches reference profiles.
#[derive(Debug)]
pub struct References {
    registry_url: Option<String>,
    fixed: Option<(String, Arc<Profile>)>,
    cache: Mutex<HashMap<String, Arc<Profile>>>,
}

/// Reads the profile saved in a model artifact.
pub fn profile_of_artifact(bytes: &[u8], origin: &str) -> Result<Profile> {
    let artifact = lightops_ml::Artifact::from_bytes(bytes, origin).map_err(|e| Error::Reference(e.to_string()))?;
    artifact.body.profile.ok_or_else(|| {
        Error::Reference(format!("{origin} has no reference profile (it was trained before profiles were saved)"))
    })
}

impl References {
    /// With a registry (per-version references) and/or a fixed artifact.
    pub fn new(registry_url: Option<String>, fixed: Option<(String, Profile)>) -> Self {
        Self { registry_url, fixed: fixed.map(|(name, p)| (name, Arc::new(p))), cache: Mutex::new(HashMap::new()) }
    }

    /// The reference for a window whose main model is `model` (`name/version`).
    pub async fn for_model(&self, model: Option<&str>) -> Result<Option<(String, Arc<Profile>)>> {
        if let Some((name, profile)) = &self.fixed {
            return Ok(Some((name.clone(), profile.clone())));
        }
        let (Some(model), Some(url)) = (model, &self.registry_url) else { return Ok(None) };
        let Some((name, version)) = model.rsplit_once('/') else { return Ok(None) };
        let Ok(version) = version.parse::<i64>() else { return Ok(None) };
        let mut cache = self.cache.lock().await;
        if let Some(profile) = cache.get(model) {
            return Ok(Some((model.to_owned(), profile.clone())));
        }
        let mut client = lightops_client::Registry::connect(url).await.map_err(|e| Error::Reference(e.to_string()))?;
        let found = client
            .registry
            .get_model_version(registry::GetModelVersionRequest { name: name.to_owned(), version })
            .await
            .map_err(|s| Error::Reference(format!("{model}: {}", s.message())))?
            .into_inner();
        let bytes = lightops_client::download_version(&mut client, &found)
            .await
            .map_err(|e| Error::Reference(e.to_string()))?;
        let profile = Arc::new(profile_of_artifact(&bytes, &format!("models:/{name}/{version}"))?);
        cache.insert(model.to_owned(), profile.clone());
        Ok(Some((model.to_owned(), profile)))
    }
}
