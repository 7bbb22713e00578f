//! The Kubernetes executor against a scripted API server: `tower_test::mock::pair` stands in for
//! the HTTP connection, and each scenario checks every request (method, path, query, body) and
//! answers it with JSON, like kube-rs/controller-rs's `ApiServerVerifier`. Every scenario runs
//! under a timeout, so a request that never comes fails the test instead of hanging it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, Request, Response};
use kube::client::Body;
use lightops_api::common::v1::{CrossedFeature, FeatureSpec};
use lightops_api::trainer::v1::{Executor, JobSpec, PromotionPolicy};
use lightops_trainer::kube_executor::{
    EnvVar, Error, JobTemplate, KubeEvent, KubeExecutor, job_name, job_selector, spec_from_json, spec_to_json,
    train_args,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NAMESPACE: &str = "lightops";
const JOB_ID: &str = "0b7f6c1e-3f7a-4d8e-9a51-1c2d3e4f5a6b";
const REGISTRY: &str = "http://lightops-registry.mlops:5000";
const JOBS_PATH: &str = "/apis/batch/v1/namespaces/lightops/jobs";
const PODS_PATH: &str = "/api/v1/namespaces/lightops/pods";
/// Time a scenario may take; the watch scenarios with errors wait for the watcher's backoff.
const TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_TIMEOUT: Duration = Duration::from_secs(20);

fn template() -> JobTemplate {
    let mut template = JobTemplate::new(url::Url::parse(REGISTRY).unwrap_or_else(|err| panic!("url: {err}")));
    template.image = "ghcr.io/lightops/lightops:test".into();
    template.service_account = Some("lightops-train".into());
    template.env = vec![EnvVar { name: "RUST_LOG".into(), value: "info".into() }];
    template.env_from_secret = vec!["aws-credentials".into()];
    template.active_deadline_seconds = Some(3600);
    template.labels = BTreeMap::from([("team".to_owned(), "ml".to_owned())]);
    template
}

fn spec() -> JobSpec {
    JobSpec {
        train: vec!["s3://tlc/green_tripdata_2023-01.parquet".into(), "s3://tlc/green_tripdata_2023-02.parquet".into()],
        val: "s3://tlc/green_tripdata_2023-03.parquet".into(),
        feature_spec: Some(FeatureSpec {
            categorical: vec![],
            numerical: vec!["trip_distance".into()],
            crossed: vec![CrossedFeature {
                name: "PU_DO".into(),
                columns: vec!["PULocationID".into(), "DOLocationID".into()],
            }],
            target: "duration".into(),
            target_min: 1.0,
            target_max: 60.0,
        }),
        experiment: "nyc-taxi".into(),
        register_as: "ride-duration".into(),
        alias: "champion".into(),
        promotion: Some(PromotionPolicy { metric: "rmse".into(), min_improvement: 0.01 }),
        executor: Executor::Kubernetes as i32,
        tags: [("reason".to_owned(), "drift".to_owned()), ("by".to_owned(), "monitor".to_owned())]
            .into_iter()
            .collect(),
    }
}

fn executor() -> (KubeExecutor, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (KubeExecutor::new(client, NAMESPACE.into(), template()), handle)
}

/// A request as the scenario sees it.
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

async fn read(request: Request<Body>) -> Seen {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap_or_else(|err| panic!("request body: {err}"));
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("request body is not json: {err}"))
    };
    let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    Seen { method: parts.method, path: parts.uri.path().to_owned(), query, body }
}

fn response(status: u16, body: &[u8]) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|err| panic!("response: {err}"))
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn job_json(resource_version: &str, status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": job_name(JOB_ID), "namespace": NAMESPACE, "uid": "3c1c1b8e-job",
            "resourceVersion": resource_version,
            "labels": {"lightops.io/job-id": JOB_ID, "app.kubernetes.io/managed-by": "lightops-trainer"},
        },
        "status": status,
    })
}

fn pod_json(resource_version: &str, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{}-x7k2p", job_name(JOB_ID)), "namespace": NAMESPACE, "uid": "9d0e-pod",
            "resourceVersion": resource_version,
            "labels": {"lightops.io/job-id": JOB_ID},
        },
        "status": status,
    })
}

fn list_json(kind: &str, resource_version: &str, items: Vec<Value>) -> Value {
    let api_version = if kind == "JobList" { "batch/v1" } else { "v1" };
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": resource_version}, "items": items})
}

/// A scripted answer, sent once its gate (if any) opens.
struct Reply {
    status: u16,
    body: Vec<u8>,
    gate: Option<oneshot::Receiver<()>>,
}

impl Reply {
    fn json(value: Value) -> Self {
        Self { status: 200, body: value.to_string().into_bytes(), gate: None }
    }

    fn error(code: u16, reason: &str, message: &str) -> Self {
        Self { status: code, body: status_json(code, reason, message).to_string().into_bytes(), gate: None }
    }

    /// A watch response: one JSON event per line, then the body ends (the connection closes).
    fn events(events: &[(&str, Value)]) -> Self {
        let lines: Vec<String> =
            events.iter().map(|(kind, object)| json!({"type": kind, "object": object}).to_string()).collect();
        Self { status: 200, body: format!("{}\n", lines.join("\n")).into_bytes(), gate: None }
    }

    fn after(mut self, gate: oneshot::Receiver<()>) -> Self {
        self.gate = Some(gate);
        self
    }
}

/// The API server of the watch scenarios: list and watch answers per resource, in order. A
/// request with no answer left is held open, like a watch on which nothing happens.
#[derive(Default)]
struct ApiServer {
    job_lists: VecDeque<Reply>,
    job_watches: VecDeque<Reply>,
    pod_lists: VecDeque<Reply>,
    pod_watches: VecDeque<Reply>,
}

type Log = Arc<Mutex<Vec<String>>>;

impl ApiServer {
    /// Serves the watcher's requests, checking each, and logs them as `jobs list`,
    /// `jobs watch rv=100`, ….
    fn spawn(mut self, mut handle: Handle) -> (JoinHandle<()>, Log) {
        let log = Log::default();
        let seen_log = log.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let seen = read(request).await;
                assert_eq!(seen.method, Method::GET, "{}", seen.path);
                let resource = match seen.path.as_str() {
                    JOBS_PATH => "jobs",
                    PODS_PATH => "pods",
                    other => panic!("unexpected request to {other}"),
                };
                let query = &seen.query;
                assert_eq!(query.get("labelSelector"), Some(&job_selector(JOB_ID)), "{query:?}");
                let watch = query.get("watch").map(String::as_str) == Some("true");
                let entry = if watch {
                    assert_eq!(query.get("allowWatchBookmarks").map(String::as_str), Some("true"));
                    assert_eq!(query.get("timeoutSeconds").map(String::as_str), Some("290"));
                    let version = query
                        .get("resourceVersion")
                        .unwrap_or_else(|| panic!("watch without resourceVersion: {query:?}"));
                    format!("{resource} watch rv={version}")
                } else {
                    assert_eq!(query.get("limit").map(String::as_str), Some("500"), "{query:?}");
                    assert!(!query.contains_key("resourceVersion"), "{query:?}");
                    format!("{resource} list")
                };
                seen_log.lock().unwrap_or_else(|err| panic!("log: {err}")).push(entry);
                let queue = match (resource, watch) {
                    ("jobs", false) => &mut self.job_lists,
                    ("jobs", true) => &mut self.job_watches,
                    ("pods", false) => &mut self.pod_lists,
                    _ => &mut self.pod_watches,
                };
                match queue.pop_front() {
                    Some(reply) => {
                        tokio::spawn(async move {
                            if let Some(gate) = reply.gate {
                                let _ = gate.await;
                            }
                            send.send_response(response(reply.status, &reply.body));
                        });
                    }
                    None => held.push(send),
                }
            }
        });
        (task, log)
    }
}

/// Runs `test` while `server` answers, failing on the server's panics and on a timeout.
async fn scenario<T>(limit: Duration, server: JoinHandle<()>, test: impl Future<Output = T>) -> T {
    let run = async move {
        tokio::pin!(test);
        tokio::select! {
            output = &mut test => output,
            served = server => {
                if let Err(err) = served
                    && err.is_panic()
                {
                    std::panic::resume_unwind(err.into_panic());
                }
                test.await
            }
        }
    };
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("scenario did not finish within {limit:?}: a request was not made or answered"))
}

/// Answers exactly one request with `reply` after checking it with `check`.
fn answer_one(mut handle: Handle, check: impl FnOnce(Seen) + Send + 'static, reply: Reply) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (request, send) = handle.next_request().await.unwrap_or_else(|| panic!("no request was made"));
        check(read(request).await);
        send.send_response(response(reply.status, &reply.body));
    })
}

fn env_of(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .unwrap_or_else(|| panic!("no env: {container}"))
        .iter()
        .map(|var| {
            let text = |key: &str| var[key].as_str().unwrap_or_default().to_owned();
            (text("name"), text("value"))
        })
        .collect()
}

#[test]
fn train_args_are_the_lightops_train_command_line() {
    let args = train_args(JOB_ID, &spec(), REGISTRY);
    let expected = [
        "train",
        "--train",
        "s3://tlc/green_tripdata_2023-01.parquet",
        "--train",
        "s3://tlc/green_tripdata_2023-02.parquet",
        "--val",
        "s3://tlc/green_tripdata_2023-03.parquet",
        "--registry",
        REGISTRY,
        "--experiment",
        "nyc-taxi",
        "--register-as",
        "ride-duration",
        "--job-id",
        JOB_ID,
        "--json",
        "--tag",
        "by=monitor",
        "--tag",
        "reason=drift",
    ];
    assert_eq!(args, expected);

    let bare = JobSpec { train: vec!["a.parquet".into()], val: "b.parquet".into(), ..Default::default() };
    assert_eq!(
        train_args("j1", &bare, REGISTRY),
        ["train", "--train", "a.parquet", "--val", "b.parquet", "--registry", REGISTRY, "--job-id", "j1", "--json"]
    );
}

/// Scenario 1: the POST carries the whole Job.
#[tokio::test]
async fn submit_creates_the_job_with_the_expected_spec() {
    let (executor, handle) = executor();
    let server = answer_one(
        handle,
        |seen| {
            assert_eq!(seen.method, Method::POST);
            assert_eq!(seen.path, JOBS_PATH);
            let job = &seen.body;
            assert_eq!(job["apiVersion"], "batch/v1");
            assert_eq!(job["kind"], "Job");
            let metadata = &job["metadata"];
            assert_eq!(metadata["name"], format!("lightops-train-{JOB_ID}"));
            assert_eq!(metadata["namespace"], NAMESPACE);
            let expected_labels = json!({
                "app.kubernetes.io/name": "lightops",
                "app.kubernetes.io/component": "training",
                "app.kubernetes.io/managed-by": "lightops-trainer",
                "lightops.io/job-id": JOB_ID,
                "team": "ml",
            });
            assert_eq!(metadata["labels"], expected_labels);
            assert_eq!(metadata["annotations"]["lightops.io/job-id"], JOB_ID);
            let annotation = metadata["annotations"]["lightops.io/job-spec"]
                .as_str()
                .unwrap_or_else(|| panic!("no job-spec annotation: {metadata}"));
            assert_eq!(annotation, spec_to_json(&spec()));
            assert_eq!(spec_from_json(annotation).ok(), Some(spec()));

            let job_spec = &job["spec"];
            assert_eq!(job_spec["backoffLimit"], 1);
            assert_eq!(job_spec["ttlSecondsAfterFinished"], 86_400);
            assert_eq!(job_spec["activeDeadlineSeconds"], 3600);
            let pod = &job_spec["template"];
            assert_eq!(pod["metadata"]["labels"], expected_labels);
            let pod_spec = &pod["spec"];
            assert_eq!(pod_spec["restartPolicy"], "Never");
            assert_eq!(pod_spec["serviceAccountName"], "lightops-train");
            assert_eq!(pod_spec["automountServiceAccountToken"], false);
            assert_eq!(
                pod_spec["securityContext"],
                json!({
                    "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                })
            );
            assert_eq!(pod_spec["volumes"], json!([{"name": "tmp", "emptyDir": {}}]));

            let containers = pod_spec["containers"].as_array().unwrap_or_else(|| panic!("no containers: {pod_spec}"));
            assert_eq!(containers.len(), 1);
            let container = &containers[0];
            assert_eq!(container["name"], "train");
            assert_eq!(container["image"], "ghcr.io/lightops/lightops:test");
            assert_eq!(container["command"], json!(["lightops"]));
            assert_eq!(container["args"], json!(train_args(JOB_ID, &spec(), REGISTRY)));
            let env = env_of(container);
            assert_eq!(env.get("LIGHTOPS_HOME").map(String::as_str), Some("/tmp/lightops"));
            assert_eq!(env.get("RUST_LOG").map(String::as_str), Some("info"));
            let spec_json: Value = serde_json::from_str(env.get("LIGHTOPS_SPEC_JSON").map_or("", String::as_str))
                .unwrap_or_else(|err| panic!("LIGHTOPS_SPEC_JSON: {err}"));
            assert_eq!(
                spec_json,
                json!({
                    "categorical": [], "numerical": ["trip_distance"],
                    "crossed": [{"name": "PU_DO", "columns": ["PULocationID", "DOLocationID"]}],
                    "target_min": 1.0, "target_max": 60.0,
                })
            );
            assert_eq!(container["envFrom"], json!([{"secretRef": {"name": "aws-credentials"}}]));
            assert_eq!(
                container["resources"],
                json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}})
            );
            assert_eq!(
                container["securityContext"],
                json!({
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
                    "privileged": false, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                })
            );
            assert_eq!(container["volumeMounts"], json!([{"name": "tmp", "mountPath": "/tmp"}]));
        },
        Reply::json(job_json("100", json!({}))),
    );
    let name = scenario(TIMEOUT, server, executor.submit(JOB_ID, &spec())).await;
    assert_eq!(name.ok(), Some(format!("lightops-train-{JOB_ID}")));
}

/// Scenario 2: Running, then Succeeded, then the stream ends.
#[tokio::test]
async fn watch_reports_running_then_succeeded() {
    let (executor, handle) = executor();
    let mut api = ApiServer::default();
    api.job_lists.push_back(Reply::json(list_json("JobList", "100", vec![job_json("100", json!({}))])));
    api.job_watches.push_back(Reply::events(&[
        ("MODIFIED", job_json("101", json!({"active": 1, "ready": 1}))),
        (
            "MODIFIED",
            job_json(
                "102",
                json!({"succeeded": 1, "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"},
                ]}),
            ),
        ),
    ]));
    api.pod_lists.push_back(Reply::json(list_json("PodList", "100", vec![])));
    let (server, log) = api.spawn(handle);

    let events: Vec<KubeEvent> = scenario(TIMEOUT, server, executor.watch(JOB_ID).collect()).await;
    assert_eq!(events, [KubeEvent::Created, KubeEvent::Running, KubeEvent::Succeeded]);
    let log = log.lock().unwrap_or_else(|err| panic!("log: {err}")).clone();
    assert!(log.contains(&"jobs list".to_owned()), "{log:?}");
    assert!(log.contains(&"jobs watch rv=100".to_owned()), "{log:?}");
    assert!(log.contains(&"pods list".to_owned()), "{log:?}");
}

/// Scenario 3: the pod exits with code 1, then the Job fails with BackoffLimitExceeded.
#[tokio::test]
async fn watch_reports_pod_failure_then_backoff_limit_exceeded() {
    let (executor, handle) = executor();
    let (open_gate, gate) = oneshot::channel();
    let mut api = ApiServer::default();
    api.job_lists.push_back(Reply::json(list_json("JobList", "100", vec![job_json("100", json!({"active": 1}))])));
    api.job_watches.push_back(
        Reply::events(&[(
            "MODIFIED",
            job_json(
                "105",
                json!({"failed": 2, "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit"},
                ]}),
            ),
        )])
        .after(gate),
    );
    api.pod_lists.push_back(Reply::json(list_json("PodList", "100", vec![])));
    api.pod_watches.push_back(Reply::events(&[(
        "MODIFIED",
        pod_json(
            "103",
            json!({"phase": "Failed", "containerStatuses": [{
                "name": "train", "image": "ghcr.io/lightops/lightops:test", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error",
                                         "message": "reading s3://tlc/green_tripdata_2023-01.parquet: access denied"}},
            }]}),
        ),
    )]));
    let (server, _log) = api.spawn(handle);

    let mut open_gate = Some(open_gate);
    let watch = async {
        let mut events = Vec::new();
        let mut stream = executor.watch(JOB_ID);
        while let Some(event) = stream.next().await {
            if matches!(event, KubeEvent::PodFailed { .. })
                && let Some(open) = open_gate.take()
            {
                let _ = open.send(());
            }
            events.push(event);
        }
        events
    };
    let events = scenario(TIMEOUT, server, watch).await;

    assert_eq!(events.first(), Some(&KubeEvent::Created), "{events:?}");
    let pod_failed = events
        .iter()
        .position(|event| {
            matches!(event, KubeEvent::PodFailed { pod, reason }
                if *pod == format!("lightops-train-{JOB_ID}-x7k2p")
                    && reason == "Error: container train exited with code 1: \
                                  reading s3://tlc/green_tripdata_2023-01.parquet: access denied")
        })
        .unwrap_or_else(|| panic!("no PodFailed: {events:?}"));
    let Some(KubeEvent::Failed { reason }) = events.last() else {
        panic!("the last event is not Failed: {events:?}");
    };
    assert!(reason.contains("BackoffLimitExceeded"), "{reason}");
    assert!(reason.contains("Job has reached the specified backoff limit"), "{reason}");
    assert!(pod_failed < events.len() - 1, "{events:?}");
}

/// Scenario 4: a second submit of the same job id.
#[tokio::test]
async fn resubmit_is_already_exists() {
    let (executor, handle) = executor();
    let name = job_name(JOB_ID);
    let server = answer_one(
        handle,
        |seen| {
            assert_eq!(seen.method, Method::POST);
            assert_eq!(seen.path, JOBS_PATH);
        },
        Reply::error(409, "AlreadyExists", &format!("jobs.batch \"{name}\" already exists")),
    );
    let result = scenario(TIMEOUT, server, executor.submit(JOB_ID, &spec())).await;
    match result {
        Err(Error::AlreadyExists { job_id, name: k8s_name }) => {
            assert_eq!(job_id, JOB_ID);
            assert_eq!(k8s_name, name);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

/// Scenario 5: the trainer's Role does not allow creating Jobs.
#[tokio::test]
async fn forbidden_create_names_verb_and_resource() {
    let (executor, handle) = executor();
    let message = "jobs.batch is forbidden: User \"system:serviceaccount:lightops:lightops-trainer\" cannot \
                   create resource \"jobs\" in API group \"batch\" in the namespace \"lightops\"";
    let server =
        answer_one(handle, |seen| assert_eq!(seen.method, Method::POST), Reply::error(403, "Forbidden", message));
    let error = match scenario(TIMEOUT, server, executor.submit(JOB_ID, &spec())).await {
        Err(error) => error,
        Ok(name) => panic!("created {name} despite 403"),
    };
    let text = error.to_string();
    match &error {
        Error::Forbidden { verb, resource, namespace, message: api_message } => {
            assert_eq!(*verb, "create");
            assert_eq!(*resource, "jobs.batch");
            assert_eq!(namespace, NAMESPACE);
            assert_eq!(api_message, message);
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(text.contains("create") && text.contains("jobs.batch") && text.contains("Role"), "{text}");
}

/// A missing namespace is `NotFound`.
#[tokio::test]
async fn missing_namespace_is_not_found() {
    let (executor, handle) = executor();
    let server = answer_one(handle, |_| {}, Reply::error(404, "NotFound", "namespaces \"lightops\" not found"));
    match scenario(TIMEOUT, server, executor.submit(JOB_ID, &spec())).await {
        Err(Error::NotFound { namespace, message }) => {
            assert_eq!(namespace, NAMESPACE);
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Scenario 6: the watch connection closes, the next watch fails with a 500, the one after that
/// is told its resource version expired (410): the watcher watches again, then lists again, and
/// Succeeded still arrives.
#[tokio::test]
async fn watch_survives_closed_connections_errors_and_relists() {
    let (executor, handle) = executor();
    let mut api = ApiServer::default();
    api.job_lists.push_back(Reply::json(list_json("JobList", "100", vec![job_json("100", json!({}))])));
    // The connection closes after one event: the watcher resumes from 101 at once.
    api.job_watches.push_back(Reply::events(&[("MODIFIED", job_json("101", json!({"active": 1})))]));
    // The API server fails: the watcher backs off and watches from 101 again.
    api.job_watches.push_back(Reply::error(500, "InternalError", "etcdserver: request timed out"));
    // 101 is too old: the watcher backs off and starts over with a list.
    api.job_watches
        .push_back(Reply::events(&[("ERROR", status_json(410, "Expired", "too old resource version: 101 (150)"))]));
    api.job_lists.push_back(Reply::json(list_json("JobList", "200", vec![job_json("200", json!({"active": 1}))])));
    api.job_watches.push_back(Reply::events(&[(
        "MODIFIED",
        job_json("201", json!({"conditions": [{"type": "Complete", "status": "True"}]})),
    )]));
    api.pod_lists.push_back(Reply::json(list_json("PodList", "100", vec![])));
    let (server, log) = api.spawn(handle);

    let events: Vec<KubeEvent> = scenario(BACKOFF_TIMEOUT, server, executor.watch(JOB_ID).collect()).await;
    assert_eq!(events, [KubeEvent::Created, KubeEvent::Running, KubeEvent::Succeeded]);
    let log = log.lock().unwrap_or_else(|err| panic!("log: {err}")).clone();
    let jobs: Vec<&str> = log.iter().map(String::as_str).filter(|entry| entry.starts_with("jobs")).collect();
    assert_eq!(
        jobs,
        ["jobs list", "jobs watch rv=100", "jobs watch rv=101", "jobs watch rv=101", "jobs list", "jobs watch rv=200",]
    );
}

/// The Job is deleted (cancelled, or by hand) while watched; a Job that is not there at all is
/// reported as deleted at once.
#[tokio::test]
async fn watch_reports_deleted_jobs() {
    let (executor, handle) = executor();
    let mut api = ApiServer::default();
    api.job_lists.push_back(Reply::json(list_json("JobList", "100", vec![job_json("100", json!({"active": 1}))])));
    api.job_watches.push_back(Reply::events(&[("DELETED", job_json("101", json!({"active": 1})))]));
    api.pod_lists.push_back(Reply::json(list_json("PodList", "100", vec![])));
    let (server, _log) = api.spawn(handle);
    let events: Vec<KubeEvent> = scenario(TIMEOUT, server, executor.watch(JOB_ID).collect()).await;
    assert_eq!(events, [KubeEvent::Created, KubeEvent::Running, KubeEvent::Deleted]);

    let (executor, handle) = self::executor();
    let mut api = ApiServer::default();
    api.job_lists.push_back(Reply::json(list_json("JobList", "100", vec![])));
    api.pod_lists.push_back(Reply::json(list_json("PodList", "100", vec![])));
    let (server, _log) = api.spawn(handle);
    let events: Vec<KubeEvent> = scenario(TIMEOUT, server, executor.watch(JOB_ID).collect()).await;
    assert_eq!(events, [KubeEvent::Deleted]);
}

/// Scenario 7: a restarted trainer finds its Jobs, over two pages, with their specs.
#[tokio::test]
async fn adopt_lists_managed_jobs_with_their_specs() {
    let (executor, mut handle) = executor();
    let other_id = "5e1d2c3b-0000-4000-8000-000000000002";
    let other_spec = JobSpec {
        train: vec!["s3://tlc/yellow_tripdata_2024-01.parquet".into()],
        val: "s3://tlc/yellow_tripdata_2024-02.parquet".into(),
        experiment: "yellow".into(),
        ..Default::default()
    };
    let manifest = |job_id: &str, spec: &JobSpec, status: Value| {
        let mut job = serde_json::to_value(executor.job_manifest(job_id, spec))
            .unwrap_or_else(|err| panic!("manifest json: {err}"));
        job["metadata"]["resourceVersion"] = json!("100");
        job["status"] = status;
        job
    };
    let finished =
        manifest(JOB_ID, &spec(), json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}));
    let running = manifest(other_id, &other_spec, json!({"active": 1}));
    let mut stray = job_json("100", json!({}));
    stray["metadata"]["name"] = json!("lightops-train-by-hand");

    let first_page = json!({
        "apiVersion": "batch/v1", "kind": "JobList",
        "metadata": {"resourceVersion": "100", "continue": "page-2"},
        "items": [finished],
    });
    let second_page = list_json("JobList", "100", vec![stray, running]);
    let server = tokio::spawn(async move {
        for (page, body) in [(None, first_page), (Some("page-2"), second_page)] {
            let (request, send) = handle.next_request().await.unwrap_or_else(|| panic!("no list request"));
            let seen = read(request).await;
            assert_eq!(seen.method, Method::GET);
            assert_eq!(seen.path, JOBS_PATH);
            let query = &seen.query;
            assert_eq!(
                query.get("labelSelector").map(String::as_str),
                Some("app.kubernetes.io/managed-by=lightops-trainer"),
                "{query:?}"
            );
            assert!(!query.contains_key("watch"), "{query:?}");
            assert_eq!(query.get("continue").map(String::as_str), page, "{query:?}");
            send.send_response(response(200, body.to_string().as_bytes()));
        }
    });

    let adopted = scenario(TIMEOUT, server, executor.adopt()).await.unwrap_or_else(|err| panic!("adopt: {err}"));
    assert_eq!(adopted.len(), 2, "{adopted:?}");
    assert_eq!(adopted[0].job_id, JOB_ID);
    assert_eq!(adopted[0].spec, spec());
    assert_eq!(adopted[0].k8s_name, job_name(JOB_ID));
    assert_eq!(adopted[0].finished, Some(true));
    assert_eq!(adopted[1].job_id, other_id);
    assert_eq!(adopted[1].spec, other_spec);
    assert_eq!(adopted[1].k8s_name, job_name(other_id));
    assert_eq!(adopted[1].finished, None);
}

/// cancel() deletes with background propagation; a Job already gone is fine; a refusal says why.
#[tokio::test]
async fn cancel_deletes_the_job_in_the_background() {
    let (executor, mut handle) = executor();
    let server = tokio::spawn(async move {
        let replies = [
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": job_name(JOB_ID), "group": "batch", "kind": "jobs"}}),
            ),
            (404, status_json(404, "NotFound", "jobs.batch \"x\" not found")),
            (403, status_json(403, "Forbidden", "jobs.batch is forbidden: cannot delete resource \"jobs\"")),
        ];
        for (code, body) in replies {
            let (request, send) = handle.next_request().await.unwrap_or_else(|| panic!("no delete request"));
            let seen = read(request).await;
            assert_eq!(seen.method, Method::DELETE);
            assert_eq!(seen.path, format!("{JOBS_PATH}/lightops-train-{JOB_ID}"));
            assert_eq!(seen.body["propagationPolicy"], "Background", "{}", seen.body);
            send.send_response(response(code, body.to_string().as_bytes()));
        }
    });
    let results = scenario(TIMEOUT, server, async {
        let deleted = executor.cancel(JOB_ID).await;
        let gone = executor.cancel(JOB_ID).await;
        let refused = executor.cancel(JOB_ID).await;
        (deleted, gone, refused)
    })
    .await;
    assert!(results.0.is_ok(), "{:?}", results.0);
    assert!(results.1.is_ok(), "{:?}", results.1);
    assert!(
        matches!(results.2, Err(Error::Forbidden { verb: "delete", resource: "jobs.batch", .. })),
        "{:?}",
        results.2
    );
}
