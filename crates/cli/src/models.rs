//! `lightops models …`: the registry from a terminal. Tables for people, `--json` for scripts.

use anyhow::anyhow;
use lightops_api::registry::v1 as pb;
use serde_json::json;

use crate::cli::{ModelsArgs, ModelsCommand};
use crate::registry_client::with_registry;

const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let registry_url = args.registry.clone();
    with_registry(&registry_url, async |client| {
        let registry = &mut client.registry;
        let status = |s: tonic::Status| anyhow!("{}", s.message());
        match args.command {
            ModelsCommand::List { contains } => {
                let request = pb::ListRegisteredModelsRequest {
                    name_contains: contains,
                    page_size: 1000,
                    page_token: String::new(),
                };
                let models = registry.list_registered_models(request).await.map_err(status)?.into_inner().models;
                if args.json {
                    let list: Vec<_> = models.iter().map(model_json).collect();
                    println!("{}", serde_json::to_string(&list)?);
                } else {
                    println!("{:<32} {:>8}  aliases", "name", "latest");
                    for model in &models {
                        println!("{:<32} {:>8}  {}", model.name, model.latest_version, aliases_text(model));
                    }
                }
            }
            ModelsCommand::Show { name } => {
                let model = registry
                    .get_registered_model(pb::GetRegisteredModelRequest { name: name.clone() })
                    .await
                    .map_err(status)?
                    .into_inner();
                let versions = registry
                    .list_model_versions(pb::ListModelVersionsRequest { name })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .versions;
                if args.json {
                    let mut out = model_json(&model);
                    out["versions"] = versions.iter().map(version_json).collect();
                    println!("{}", serde_json::to_string(&out)?);
                } else {
                    println!("{}  {}", model.name, model.description);
                    println!("aliases: {}", aliases_text(&model));
                    println!("{:>7}  {:<10}  {:<32}  source", "version", "stage", "run");
                    for v in &versions {
                        println!("{:>7}  {:<10}  {:<32}  {}", v.version, stage_name(v.stage), v.run_id, v.source);
                    }
                }
            }
            ModelsCommand::Resolve { uri } => {
                let version = registry.resolve(pb::ResolveRequest { uri }).await.map_err(status)?.into_inner();
                // The contract: {"run_id":…,"source":…,"version":…}, with or without --json.
                println!(
                    "{}",
                    json!({"run_id": version.run_id, "source": version.source, "version": version.version.to_string()})
                );
            }
            ModelsCommand::Alias { name, alias, version } => {
                let v = registry
                    .set_alias(pb::SetAliasRequest { name, alias: alias.clone(), version })
                    .await
                    .map_err(status)?
                    .into_inner();
                if args.json {
                    println!("{}", serde_json::to_string(&version_json(&v))?);
                } else {
                    println!("{}@{alias} -> version {}", v.name, v.version);
                }
            }
            ModelsCommand::Promote { name, version, stage, keep_existing } => {
                let index = STAGES
                    .iter()
                    .position(|s| s.eq_ignore_ascii_case(&stage))
                    .ok_or_else(|| anyhow!("stage {stage:?}: expected one of None, Staging, Production, Archived"))?;
                let request = pb::TransitionStageRequest {
                    name,
                    version,
                    stage: index as i32,
                    archive_existing_versions: !keep_existing,
                };
                let v = registry.transition_stage(request).await.map_err(status)?.into_inner();
                if args.json {
                    println!("{}", serde_json::to_string(&version_json(&v))?);
                } else {
                    println!("{} version {} is now in {}", v.name, v.version, stage_name(v.stage));
                }
            }
        }
        Ok(())
    })
}

fn stage_name(stage: i32) -> &'static str {
    usize::try_from(stage).ok().and_then(|i| STAGES.get(i).copied()).unwrap_or("?")
}

fn aliases_text(model: &pb::RegisteredModel) -> String {
    let mut aliases: Vec<String> = model.aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
    aliases.sort();
    aliases.join(", ")
}

fn model_json(model: &pb::RegisteredModel) -> serde_json::Value {
    json!({
        "name": model.name,
        "description": model.description,
        "latest_version": model.latest_version,
        "aliases": model.aliases,
        "tags": model.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

fn version_json(v: &pb::ModelVersion) -> serde_json::Value {
    json!({
        "name": v.name,
        "version": v.version,
        "run_id": v.run_id,
        "source": v.source,
        "sha256": v.sha256,
        "stage": stage_name(v.stage),
        "aliases": v.aliases,
    })
}
