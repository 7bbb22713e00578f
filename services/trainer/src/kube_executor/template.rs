//! What every training Job looks like: the part of the trainer's configuration that is not the
//! job spec.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Deserializer};
use url::Url;

/// Image used when the configuration names none: the lightops image of this very version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/lightops/lightops:", env!("CARGO_PKG_VERSION"));

/// How long a finished Job (and its pods and logs) is kept before Kubernetes deletes it: a day.
pub const DEFAULT_TTL_SECONDS_AFTER_FINISHED: i32 = 86_400;

/// How many times a failed pod is retried before the Job fails.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 1;

/// The user and group the container runs as (the distroless `nonroot` user).
pub const DEFAULT_RUN_AS_USER: i64 = 65_532;

/// The template of the Kubernetes Jobs the trainer creates, read from the trainer's configuration.
///
/// Only `registry_url` is required; everything else has a default. Unknown fields are rejected so
/// that a typo does not silently fall back to a default.
///
/// The security settings are fixed, not configurable: the pod runs as a non-root user with a
/// read-only root filesystem, no privilege escalation, every capability dropped, the
/// `RuntimeDefault` seccomp profile and no service account token; an `emptyDir` is mounted at
/// `/tmp` and `LIGHTOPS_HOME` points into it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplate {
    /// The registry as the training pod reaches it, e.g. `http://lightops-registry.mlops:5000`.
    #[serde(deserialize_with = "deserialize_url")]
    pub registry_url: Url,
    /// Container image running `lightops train` [default: [`DEFAULT_IMAGE`]].
    #[serde(default = "default_image")]
    pub image: String,
    /// Image pull policy [default: unset, so Kubernetes' own default applies].
    #[serde(default)]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Service account of the pod, e.g. one bound to an IAM role for S3 [default: the namespace's
    /// `default`].
    #[serde(default)]
    pub service_account: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(default)]
    pub resources: Resources,
    /// Extra environment variables of the container.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Secrets whose keys all become environment variables, e.g. one holding
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub env_from_secret: Vec<String>,
    /// Seconds a finished Job is kept before Kubernetes deletes it; `null` keeps it forever
    /// [default: [`DEFAULT_TTL_SECONDS_AFTER_FINISHED`]].
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Retries of a failed pod before the Job fails [default: [`DEFAULT_BACKOFF_LIMIT`]].
    #[serde(default = "default_backoff_limit")]
    pub backoff_limit: i32,
    /// Seconds after which a running Job is failed with `DeadlineExceeded` [default: none]. Also
    /// the only way a pod stuck in `ImagePullBackOff` ends.
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// Node labels the pod must be scheduled on.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Extra labels of the Job and its pods (the lightops labels win on a clash).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the Job and its pods (the lightops annotations win on a clash).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// User, group and fsGroup the pod runs as [default: [`DEFAULT_RUN_AS_USER`]].
    #[serde(default = "default_run_as_user")]
    pub run_as_user: i64,
    /// Size limit of the `/tmp` emptyDir, e.g. `10Gi` [default: none].
    #[serde(default)]
    pub tmp_size_limit: Option<Quantity>,
}

impl JobTemplate {
    /// A template with every default and the given registry URL.
    pub fn new(registry_url: Url) -> Self {
        Self {
            registry_url,
            image: default_image(),
            image_pull_policy: None,
            service_account: None,
            resources: Resources::default(),
            env: Vec::new(),
            env_from_secret: Vec::new(),
            ttl_seconds_after_finished: default_ttl(),
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
            active_deadline_seconds: None,
            node_selector: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            run_as_user: DEFAULT_RUN_AS_USER,
            tmp_size_limit: None,
        }
    }
}

/// When the kubelet pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ImagePullPolicy {
    /// On every pod start.
    Always,
    /// Only when the node does not have it.
    IfNotPresent,
    /// Never: the image must already be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Requests and limits of the training container.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default)]
    pub requests: ResourceRequests,
    /// What the container may use at most.
    #[serde(default)]
    pub limits: ResourceLimits,
}

/// CPU and memory requests; `null` leaves one unset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequests {
    /// CPU, e.g. `500m` [default: `500m`].
    #[serde(default = "default_request_cpu")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `1Gi` [default: `1Gi`].
    #[serde(default = "default_request_memory")]
    pub memory: Option<Quantity>,
}

impl Default for ResourceRequests {
    fn default() -> Self {
        Self { cpu: default_request_cpu(), memory: default_request_memory() }
    }
}

/// CPU and memory limits; `null` leaves one unset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU, e.g. `2` [default: `2`].
    #[serde(default = "default_limit_cpu")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `4Gi` [default: `4Gi`].
    #[serde(default = "default_limit_memory")]
    pub memory: Option<Quantity>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self { cpu: default_limit_cpu(), memory: default_limit_memory() }
    }
}

/// An extra environment variable of the training container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

fn default_ttl() -> Option<i32> {
    Some(DEFAULT_TTL_SECONDS_AFTER_FINISHED)
}

fn default_backoff_limit() -> i32 {
    DEFAULT_BACKOFF_LIMIT
}

fn default_run_as_user() -> i64 {
    DEFAULT_RUN_AS_USER
}

fn default_request_cpu() -> Option<Quantity> {
    Some(Quantity("500m".into()))
}

fn default_request_memory() -> Option<Quantity> {
    Some(Quantity("1Gi".into()))
}

fn default_limit_cpu() -> Option<Quantity> {
    Some(Quantity("2".into()))
}

fn default_limit_memory() -> Option<Quantity> {
    Some(Quantity("4Gi".into()))
}

fn deserialize_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    let url = Url::parse(&text).map_err(|err| serde::de::Error::custom(format!("invalid url `{text}`: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(serde::de::Error::custom(format!("registry url `{text}` is not http or https")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_registry_url_is_required() -> Result<(), serde_json::Error> {
        let template: JobTemplate = serde_json::from_str(r#"{"registry_url":"http://registry:5000"}"#)?;
        assert_eq!(template, JobTemplate::new(Url::parse("http://registry:5000").map_err(serde::de::Error::custom)?));
        assert_eq!(template.image, DEFAULT_IMAGE);
        assert_eq!(template.resources.requests.cpu, Some(Quantity("500m".into())));
        assert_eq!(template.resources.limits.memory, Some(Quantity("4Gi".into())));
        assert_eq!(template.ttl_seconds_after_finished, Some(86_400));
        assert_eq!(template.backoff_limit, 1);
        assert!(serde_json::from_str::<JobTemplate>("{}").is_err());
        Ok(())
    }

    #[test]
    fn reads_every_field() -> Result<(), serde_json::Error> {
        let template: JobTemplate = serde_json::from_str(
            r#"{"registry_url":"https://registry.example","image":"lightops:dev","image_pull_policy":"Always",
                "service_account":"trainer-job","resources":{"requests":{"cpu":"1"},"limits":{"memory":null}},
                "env":[{"name":"RUST_LOG","value":"debug"}],"env_from_secret":["aws"],
                "ttl_seconds_after_finished":null,"backoff_limit":3,"active_deadline_seconds":3600,
                "node_selector":{"pool":"batch"},"labels":{"team":"ml"},"annotations":{"a":"b"},
                "run_as_user":1000,"tmp_size_limit":"10Gi"}"#,
        )?;
        assert_eq!(template.image_pull_policy, Some(ImagePullPolicy::Always));
        assert_eq!(template.resources.requests.cpu, Some(Quantity("1".into())));
        assert_eq!(template.resources.requests.memory, Some(Quantity("1Gi".into())));
        assert_eq!(template.resources.limits.memory, None);
        assert_eq!(template.ttl_seconds_after_finished, None);
        assert_eq!(template.active_deadline_seconds, Some(3600));
        assert_eq!(template.tmp_size_limit, Some(Quantity("10Gi".into())));
        Ok(())
    }

    #[test]
    fn rejects_typos_and_bad_urls() {
        assert!(serde_json::from_str::<JobTemplate>(r#"{"registry_url":"http://r","imagee":"x"}"#).is_err());
        assert!(serde_json::from_str::<JobTemplate>(r#"{"registry_url":"registry:5000/x y"}"#).is_err());
        assert!(serde_json::from_str::<JobTemplate>(r#"{"registry_url":"ftp://registry"}"#).is_err());
    }
}
