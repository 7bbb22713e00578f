//! The `batch/v1` Job of a training job, and the `lightops train` command line it runs.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lightops_api::trainer::v1::JobSpec;

use super::spec_doc::spec_to_json;
use super::template::JobTemplate;

/// Prefix of every Job name.
pub const JOB_NAME_PREFIX: &str = "lightops-train-";
/// Label `app.kubernetes.io/name` of Jobs and pods.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Label `app.kubernetes.io/component` of Jobs and pods.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label `app.kubernetes.io/managed-by` of Jobs and pods; [`super::KubeExecutor::adopt`] selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "lightops-trainer";
/// Label carrying the job id (made label-safe, see [`job_label_value`]); the watch selects on it.
pub const JOB_ID_LABEL: &str = "lightops.io/job-id";
/// Annotation carrying the job id exactly as given.
pub const JOB_ID_ANNOTATION: &str = "lightops.io/job-id";
/// Annotation carrying the job spec as JSON (see [`super::spec_to_json`]).
pub const JOB_SPEC_ANNOTATION: &str = "lightops.io/job-spec";
/// Environment variable holding the feature spec as JSON for `lightops train`.
pub const SPEC_JSON_ENV: &str = "LIGHTOPS_SPEC_JSON";
/// Name of the training container.
pub const CONTAINER_NAME: &str = "train";
/// Where the writable emptyDir is mounted (the root filesystem is read-only).
pub const TMP_DIR: &str = "/tmp";
/// `LIGHTOPS_HOME` of the training container, inside [`TMP_DIR`].
pub const LIGHTOPS_HOME: &str = "/tmp/lightops";

/// The arguments of `lightops train` for a job, without the program name:
/// `train --train URI… --val URI --registry URL [--experiment NAME] [--register-as MODEL]
/// --job-id ID --json [--tag KEY=VALUE…]`.
///
/// The container runs `lightops` with exactly these arguments; a local process given the same
/// arguments and [`train_env`] does the same work. `--experiment` is left out when the spec has
/// none (the CLI's default applies), tags come in key order, and neither `--alias` nor the
/// promotion policy is passed: the trainer applies the policy itself once the run is registered.
pub fn train_args(job_id: &str, spec: &JobSpec, registry_url: &str) -> Vec<String> {
    let mut args = vec!["train".to_owned()];
    for uri in &spec.train {
        args.extend(["--train".to_owned(), uri.clone()]);
    }
    args.extend(["--val".to_owned(), spec.val.clone()]);
    args.extend(["--registry".to_owned(), registry_url.to_owned()]);
    if !spec.experiment.is_empty() {
        args.extend(["--experiment".to_owned(), spec.experiment.clone()]);
    }
    if !spec.register_as.is_empty() {
        args.extend(["--register-as".to_owned(), spec.register_as.clone()]);
    }
    args.extend(["--job-id".to_owned(), job_id.to_owned(), "--json".to_owned()]);
    let tags: BTreeMap<&String, &String> = spec.tags.iter().collect();
    for (key, value) in tags {
        args.extend(["--tag".to_owned(), format!("{key}={value}")]);
    }
    args
}

/// The environment [`train_args`] needs: `LIGHTOPS_SPEC_JSON` with the feature spec in
/// `lightops_ml::FeatureSpec`'s JSON form when the spec sets one (without it the CLI trains the
/// workshop's default features). The proto's `target` is not passed: the target is always
/// `duration`.
pub fn train_env(spec: &JobSpec) -> Vec<(String, String)> {
    let Some(features) = &spec.feature_spec else {
        return Vec::new();
    };
    let features = lightops_ml::spec::FeatureSpec {
        categorical: features.categorical.clone(),
        numerical: features.numerical.clone(),
        crossed: features
            .crossed
            .iter()
            .map(|crossed| lightops_ml::spec::CrossedFeature {
                name: crossed.name.clone(),
                columns: crossed.columns.clone(),
            })
            .collect(),
        target_min: features.target_min,
        target_max: features.target_max,
    };
    // A struct of strings and floats always serializes (a non-finite float becomes null).
    let json = serde_json::to_string(&features).unwrap_or_default();
    vec![(SPEC_JSON_ENV.to_owned(), json)]
}

/// The Kubernetes name of a job's Job: `lightops-train-<job id>`, a DNS-1123 label of at most 63
/// characters.
///
/// A job id that is already lowercase alphanumerics and `-` and at most 48 characters (a UUID) is
/// used as it is; any other is lowercased, its other characters replaced by `-`, cut to 39
/// characters and followed by `-` and a hash of the whole id, so distinct ids keep distinct names.
pub fn job_name(job_id: &str) -> String {
    const MAX_ID: usize = 63 - JOB_NAME_PREFIX.len();
    let is_plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let clean = !job_id.is_empty()
        && job_id.len() <= MAX_ID
        && job_id.chars().all(|c| is_plain(c) || c == '-')
        && job_id.ends_with(is_plain);
    if clean {
        return format!("{JOB_NAME_PREFIX}{job_id}");
    }
    let sanitized: String = job_id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if is_plain(c) { c } else { '-' })
        .take(MAX_ID - 9)
        .collect();
    let sanitized = sanitized.trim_matches('-');
    let hash = fnv1a(job_id);
    if sanitized.is_empty() {
        format!("{JOB_NAME_PREFIX}{hash:08x}")
    } else {
        format!("{JOB_NAME_PREFIX}{sanitized}-{hash:08x}")
    }
}

/// The value of the [`JOB_ID_LABEL`] label for a job id: the id itself when it is a valid label
/// value (at most 63 characters of alphanumerics, `-`, `_` and `.`, beginning and ending with an
/// alphanumeric), otherwise a sanitized prefix followed by `-` and a hash of the whole id.
pub fn job_label_value(job_id: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let valid = !job_id.is_empty()
        && job_id.len() <= 63
        && job_id.chars().all(allowed)
        && job_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && job_id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        return job_id.to_owned();
    }
    let sanitized: String = job_id.chars().map(|c| if allowed(c) { c } else { '-' }).take(63 - 9).collect();
    let sanitized = sanitized.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = fnv1a(job_id);
    if sanitized.is_empty() { format!("{hash:08x}") } else { format!("{sanitized}-{hash:08x}") }
}

/// The label selector that finds a job's Job and pods.
pub fn job_selector(job_id: &str) -> String {
    format!("{JOB_ID_LABEL}={}", job_label_value(job_id))
}

/// The label selector that finds every Job the trainer manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// 32-bit FNV-1a: a hash that stays the same across Rust versions and platforms.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

/// The Job for `job_id` running `spec` in `namespace`.
pub(super) fn build_job(template: &JobTemplate, namespace: &str, job_id: &str, spec: &JobSpec) -> batch::Job {
    let mut labels = template.labels.clone();
    labels.extend([
        (NAME_LABEL.to_owned(), "lightops".to_owned()),
        (COMPONENT_LABEL.to_owned(), "training".to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (JOB_ID_LABEL.to_owned(), job_label_value(job_id)),
    ]);
    let mut pod_annotations = template.annotations.clone();
    pod_annotations.insert(JOB_ID_ANNOTATION.to_owned(), job_id.to_owned());
    let mut job_annotations = pod_annotations.clone();
    job_annotations.insert(JOB_SPEC_ANNOTATION.to_owned(), spec_to_json(spec));

    // `Url` always ends a bare host with `/`; the CLI takes the registry without it.
    let registry_url = template.registry_url.as_str().trim_end_matches('/');
    let mut env: Vec<core::EnvVar> = [("LIGHTOPS_HOME".to_owned(), LIGHTOPS_HOME.to_owned())]
        .into_iter()
        .chain(train_env(spec))
        .chain(template.env.iter().map(|var| (var.name.clone(), var.value.clone())))
        .map(|(name, value)| core::EnvVar { name, value: Some(value), value_from: None })
        .collect();
    // A name given twice would be ambiguous; the first (lightops') one wins.
    let mut seen = std::collections::HashSet::new();
    env.retain(|var| seen.insert(var.name.clone()));

    let env_from: Vec<core::EnvFromSource> = template
        .env_from_secret
        .iter()
        .map(|secret| core::EnvFromSource {
            secret_ref: Some(core::SecretEnvSource { name: secret.clone(), optional: None }),
            ..Default::default()
        })
        .collect();

    let quantities = |cpu: &Option<_>, memory: &Option<_>| {
        let list: BTreeMap<String, _> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(name, quantity): (&str, &Option<_>)| quantity.clone().map(|q| (name.to_owned(), q)))
            .collect();
        (!list.is_empty()).then_some(list)
    };
    let resources = core::ResourceRequirements {
        requests: quantities(&template.resources.requests.cpu, &template.resources.requests.memory),
        limits: quantities(&template.resources.limits.cpu, &template.resources.limits.memory),
        claims: None,
    };

    let seccomp = || core::SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None };
    let container = core::Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(template.image.clone()),
        image_pull_policy: template.image_pull_policy.map(|policy| policy.as_str().to_owned()),
        command: Some(vec!["lightops".to_owned()]),
        args: Some(train_args(job_id, spec, registry_url)),
        env: Some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: Some(resources),
        security_context: Some(core::SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(core::Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![core::VolumeMount {
            name: "tmp".to_owned(),
            mount_path: TMP_DIR.to_owned(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };

    let pod_spec = core::PodSpec {
        restart_policy: Some("Never".to_owned()),
        service_account_name: template.service_account.clone(),
        automount_service_account_token: Some(false),
        node_selector: (!template.node_selector.is_empty()).then(|| template.node_selector.clone()),
        security_context: Some(core::PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(template.run_as_user),
            run_as_group: Some(template.run_as_user),
            fs_group: Some(template.run_as_user),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(vec![core::Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(core::EmptyDirVolumeSource { medium: None, size_limit: template.tmp_size_limit.clone() }),
            ..Default::default()
        }]),
        ..Default::default()
    };

    batch::Job {
        metadata: ObjectMeta {
            name: Some(job_name(job_id)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            annotations: Some(job_annotations),
            ..Default::default()
        },
        spec: Some(batch::JobSpec {
            backoff_limit: Some(template.backoff_limit),
            ttl_seconds_after_finished: template.ttl_seconds_after_finished,
            active_deadline_seconds: template.active_deadline_seconds,
            template: core::PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_used_as_they_are() {
        let id = "0b7f6c1e-3f7a-4d8e-9a51-1c2d3e4f5a6b";
        assert_eq!(job_name(id), format!("lightops-train-{id}"));
        assert_eq!(job_label_value(id), id);
    }

    #[test]
    fn other_ids_become_valid_names_and_labels() {
        for id in ["Job_42", "", "--", &"x".repeat(200), "ünïcode/job", "a.b"] {
            let name = job_name(id);
            assert!(name.len() <= 63, "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()), "{name}");
            let label = job_label_value(id);
            assert!(!label.is_empty() && label.len() <= 63, "{label}");
            assert!(label.starts_with(|c: char| c.is_ascii_alphanumeric()), "{label}");
            assert!(label.ends_with(|c: char| c.is_ascii_alphanumeric()), "{label}");
        }
        assert_ne!(job_name("Job_42"), job_name("job-42"));
        assert_eq!(job_label_value("Job_42"), "Job_42");
    }
}
