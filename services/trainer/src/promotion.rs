//! The promotion policy: a new version takes the alias only when its validation metric beats the
//! alias holder's by the configured margin. The decision and both numbers are logged to the run.

use lightops_api::registry::v1 as registry;
use lightops_api::trainer::v1 as pb;
use lightops_client::Registry;

/// Metrics the policy can compare (lower is better for both).
pub const METRICS: [&str; 2] = ["rmse", "mae"];

/// The metric a policy compares (`rmse` when unset).
pub fn metric(policy: Option<&pb::PromotionPolicy>) -> &str {
    policy.map(|p| p.metric.as_str()).filter(|m| !m.is_empty()).unwrap_or("rmse")
}

/// Decides whether `candidate` takes the alias from the holder (`incumbent`: its version and its
/// metric, if it has one).
pub fn decide(
    policy: Option<&pb::PromotionPolicy>,
    candidate: f64,
    incumbent: Option<(i64, Option<f64>)>,
) -> pb::Promotion {
    let metric = metric(policy).to_owned();
    let margin = policy.map_or(0.0, |p| p.min_improvement);
    let mut decision = pb::Promotion { metric: metric.clone(), candidate, ..Default::default() };
    let Some((version, holder_metric)) = incumbent else {
        decision.promoted = true;
        decision.reason = "promoted: the alias pointed at no version yet".into();
        return decision;
    };
    decision.incumbent_version = version;
    decision.incumbent = holder_metric;
    let Some(holder) = holder_metric else {
        decision.promoted = true;
        decision.reason = format!("promoted: version {version} has no {metric} to compare with");
        return decision;
    };
    if margin < 0.0 {
        decision.promoted = true;
        decision.reason = format!("the policy always promotes (min_improvement {margin})");
        return decision;
    }
    let bar = holder * (1.0 - margin);
    decision.promoted = if margin == 0.0 { candidate < holder } else { candidate <= bar };
    let relative = if holder != 0.0 { (holder - candidate) / holder * 100.0 } else { 0.0 };
    decision.reason = if decision.promoted {
        format!(
            "{metric} {candidate:.5} beats version {version}'s {holder:.5} by {relative:.2}% (needed {:.2}%)",
            margin * 100.0
        )
    } else {
        format!(
            "{metric} {candidate:.5} does not beat version {version}'s {holder:.5} by {:.2}% (improvement {relative:.2}%)",
            margin * 100.0
        )
    };
    decision
}

/// Applies the policy for a newly registered version: reads the alias holder and its metric,
/// decides, moves the alias when promoted, and logs the decision to the new run (tags
/// `lightops.promotion` and `lightops.promotion.reason`, metrics `promotion.candidate` and
/// `promotion.incumbent`).
pub async fn apply(
    registry: &mut Registry,
    policy: Option<&pb::PromotionPolicy>,
    model: &str,
    alias: &str,
    version: i64,
    run_id: &str,
    candidate_metrics: &[(String, f64)],
) -> lightops_client::Result<pb::Promotion> {
    let metric = metric(policy);
    let candidate = candidate_metrics.iter().find(|(k, _)| k == metric).map_or(f64::NAN, |(_, v)| *v);
    let holder = lightops_client::alias_holder(registry, model, alias).await?;
    let incumbent = holder.map(|(holder_version, metrics)| {
        (holder_version.version, metrics.iter().find(|m| m.key == metric).map(|m| m.value))
    });
    // The new version already holding the alias (a re-run) is not an incumbent.
    let incumbent = incumbent.filter(|(holder_version, _)| *holder_version != version);
    let decision = decide(policy, candidate, incumbent);
    if decision.promoted {
        lightops_client::set_alias(registry, model, alias, version).await?;
    }
    let mut metrics =
        vec![registry::Metric { key: "promotion.candidate".into(), value: candidate, step: 0, timestamp_ms: 0 }];
    if let Some(incumbent) = decision.incumbent {
        metrics.push(registry::Metric {
            key: "promotion.incumbent".into(),
            value: incumbent,
            step: 0,
            timestamp_ms: 0,
        });
    }
    let outcome = if decision.promoted { format!("promoted to {alias}") } else { format!("not promoted to {alias}") };
    let tags = vec![
        registry::Tag { key: "lightops.promotion".into(), value: outcome },
        registry::Tag { key: "lightops.promotion.reason".into(), value: decision.reason.clone() },
    ];
    registry
        .tracking
        .log_batch(registry::LogBatchRequest { run_id: run_id.to_owned(), metrics, params: Vec::new(), tags })
        .await
        .map_err(|status| lightops_client::Error::Call {
            what: format!("logging the promotion to run {run_id}"),
            status,
        })?;
    tracing::info!(model, alias, version, promoted = decision.promoted, reason = %decision.reason, "promotion decided");
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_improvement: f64) -> pb::PromotionPolicy {
        pb::PromotionPolicy { metric: "rmse".into(), min_improvement }
    }

    #[test]
    fn promotes_only_past_the_margin() {
        let p = policy(0.01);
        assert!(decide(Some(&p), 8.0, None).promoted, "no holder");
        assert!(decide(Some(&p), 8.0, Some((1, None))).promoted, "holder without the metric");
        assert!(decide(Some(&p), 8.0, Some((1, Some(8.1)))).promoted, "1.2% better");
        let close = decide(Some(&p), 8.05, Some((1, Some(8.1))));
        assert!(!close.promoted, "0.6% better is not enough: {}", close.reason);
        assert_eq!((close.candidate, close.incumbent, close.incumbent_version), (8.05, Some(8.1), 1));
        assert!(!decide(Some(&policy(0.0)), 8.1, Some((1, Some(8.1)))).promoted, "a tie is not an improvement");
        assert!(decide(Some(&policy(0.0)), 8.09, Some((1, Some(8.1)))).promoted);
        assert!(decide(Some(&policy(-1.0)), 9.0, Some((1, Some(8.1)))).promoted, "negative margin always promotes");
        assert_eq!(decide(None, 1.0, None).metric, "rmse");
    }
}
