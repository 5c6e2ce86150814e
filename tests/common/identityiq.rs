//! A stand-in for IdentityIQ's SCIM API: `POST /identityiq/scim/v2/LaunchedWorkflows`,
//! checked exactly as SailPoint documents the call (path, content type, the credential, the
//! LaunchedWorkflow and TaskResult schema URNs, `workflowName`, `input` entries of key,
//! value and type) and answered as IdentityIQ does: 201 with the LaunchedWorkflow, or the
//! refusal the test asks for. Stops when dropped.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use parking_lot::Mutex;
use serde_json::{Value, json};

const LAUNCHED_WORKFLOW: &str = "urn:ietf:params:scim:schemas:sailpoint:1.0:LaunchedWorkflow";
const TASK_RESULT: &str = "urn:ietf:params:scim:schemas:sailpoint:1.0:TaskResult";

/// One request as the stand-in saw it: what was wrong with it, and its inputs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub problems: Vec<String>,
    pub workflow: String,
    pub input: HashMap<String, String>,
}

struct Seen {
    authorization: String,
    workflow: String,
    /// `None`: launch; a status: refuse with it.
    refuse: Option<u16>,
    launches: Mutex<Vec<Launch>>,
}

pub struct IdentityIqStandIn {
    /// What `identityiq.base_url` is set to: `http://127.0.0.1:<port>/identityiq`.
    pub base_url: String,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl IdentityIqStandIn {
    /// Accepts requests carrying `authorization` for `workflow`; answers `refuse` if given.
    pub async fn start(authorization: &str, workflow: &str, refuse: Option<u16>) -> Self {
        let seen = Arc::new(Seen {
            authorization: authorization.to_owned(),
            workflow: workflow.to_owned(),
            refuse,
            launches: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route(
                "/identityiq/scim/v2/LaunchedWorkflows",
                axum::routing::post(launch),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the IdentityIQ stand-in");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        IdentityIqStandIn {
            base_url: format!("http://{addr}/identityiq"),
            seen,
            task,
        }
    }

    pub fn launches(&self) -> Vec<Launch> {
        self.seen.launches.lock().clone()
    }
}

impl Drop for IdentityIqStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn launch(
    State(seen): State<Arc<Seen>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut problems = Vec::new();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("content-type") != "application/scim+json" {
        problems.push(format!("Content-Type {:?}", header("content-type")));
    }
    if header("authorization") != seen.authorization {
        problems.push("wrong Authorization".to_owned());
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (workflow, input) = check_body(&v, &seen.workflow, &mut problems);
    seen.launches.lock().push(Launch {
        problems,
        workflow: workflow.clone(),
        input,
    });
    if let Some(status) = seen.refuse {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let error = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": status.to_string(),
            "detail": "Unauthorized",
        });
        return (code, axum::Json(error));
    }
    let answer = json!({
        "schemas": [LAUNCHED_WORKFLOW, TASK_RESULT],
        "id": uuid::Uuid::new_v4().simple().to_string(),
        "type": "Workflow",
        "name": workflow,
        "completionStatus": "Success",
        LAUNCHED_WORKFLOW: { "workflowName": workflow, "output": [] },
        "meta": { "resourceType": "LaunchedWorkflow" },
    });
    (StatusCode::CREATED, axum::Json(answer))
}

/// The documented shape: exactly the two schemas, the workflow under the LaunchedWorkflow
/// URN, and every input entry a string key, value and type.
fn check_body(
    v: &Value,
    workflow: &str,
    problems: &mut Vec<String>,
) -> (String, HashMap<String, String>) {
    if v["schemas"] != json!([LAUNCHED_WORKFLOW, TASK_RESULT]) {
        problems.push(format!("schemas {}", v["schemas"]));
    }
    let keys: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    if keys.len() != 2 {
        problems.push(format!("top-level keys {keys:?}"));
    }
    let lw = &v[LAUNCHED_WORKFLOW];
    let name = lw["workflowName"].as_str().unwrap_or_default().to_owned();
    if name != workflow {
        problems.push(format!("workflowName {name:?}"));
    }
    let mut input = HashMap::new();
    for item in lw["input"].as_array().cloned().unwrap_or_default() {
        match (
            item["key"].as_str(),
            item["value"].as_str(),
            item["type"].as_str(),
        ) {
            (Some(k), Some(val), Some("string")) => {
                input.insert(k.to_owned(), val.to_owned());
            }
            _ => problems.push(format!("input entry {item}")),
        }
    }
    if input.is_empty() {
        problems.push("no input".to_owned());
    }
    (name, input)
}
