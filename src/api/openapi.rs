//! The OpenAPI 3 document of the API, generated with utoipa from one
//! `#[utoipa::path]` declaration per route (module `doc`) and the schemas
//! below (the JSON the handlers read and write). A test keeps it true:
//! every route the router serves must appear here.

use axum::Json;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// The fields a client sends for a source (POST and PUT need the seven
/// strings; PATCH takes any subset).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SourceBody {
    /// Kubernetes namespace (DNS-1123 label).
    namespace: String,
    /// Deployment name (DNS-1123 subdomain).
    deployment_name: String,
    /// https, http, ssh, git or scp-like `user@host:path`.
    git_url: String,
    branch: String,
    /// The kustomize directory inside the repository, or a file in it.
    deploy_path: String,
    container_name: String,
    /// A workload manifest or a kustomization with `images:`.
    image_version_file: String,
    /// Overrides CHUMP_INTERVAL (5 to 604800 seconds).
    interval_seconds: Option<u32>,
    /// Not checked by the schedule or webhooks while true.
    suspended: Option<bool>,
    /// Delete objects chump applied for this source that a new build no
    /// longer renders (default true; PATCH keeps the stored value).
    prune: Option<bool>,
}

/// A source as the API shows it (credentials in `git_url` masked as `***`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Source {
    id: i64,
    namespace: String,
    deployment_name: String,
    git_url: String,
    branch: String,
    deploy_path: String,
    container_name: String,
    image_version_file: String,
    interval_seconds: Option<u32>,
    suspended: bool,
    prune: bool,
    /// Deleted with `prune=true`: its objects are being pruned; it takes no
    /// updates and no checks (409), then it is gone.
    deleting: bool,
    created_at: String,
    updated_at: String,
    /// In listings: the source's status.
    status: Option<Status>,
}

/// A source's last check and its place in the schedule.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Status {
    last_checked_at: Option<String>,
    last_commit: Option<String>,
    /// deployed, up_to_date, failed, degraded (nothing to deploy, but a
    /// workload is not healthy: the message says which and why) or
    /// superseded (the branch moved during the rollout; the new commit is
    /// checked at once).
    last_outcome: Option<String>,
    /// git, manifest, cluster, build, apply, rollout, prune or timeout.
    last_stage: Option<String>,
    last_message: Option<String>,
    desired_image: Option<String>,
    running_image: Option<String>,
    consecutive_failures: u32,
    next_check_at: Option<String>,
    /// manual, webhook, schedule or delete: a requested check not yet started.
    requested: Option<String>,
    /// A check of this source is queued or running.
    in_flight: bool,
    suspended: Option<bool>,
    /// The source is being deleted (its objects pruned first).
    deleting: Option<bool>,
    /// What the last check says of the workloads: healthy (deployed or up
    /// to date), degraded (a degraded check, or a failed rollout),
    /// progressing (superseded during a rollout) or unknown (never checked,
    /// or the check failed before the workloads).
    health: String,
    /// When health is degraded: the last check's message (which workload,
    /// and why); null otherwise.
    health_reason: Option<String>,
}

/// A deploy, a failure, a supersession, a deletion, or the start or end of
/// a degraded spell (a steady check is not kept).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HistoryEntry {
    id: i64,
    source_id: i64,
    namespace: String,
    deployment_name: String,
    container_name: String,
    /// schedule, manual, webhook or delete (the prune of a source deleted
    /// with `prune=true`).
    trigger: String,
    started_at: String,
    finished_at: String,
    commit: Option<String>,
    desired_image: Option<String>,
    /// The image running before the check.
    running_image: Option<String>,
    /// deployed, failed, deleted (its objects pruned, the source gone),
    /// superseded (the branch moved during the rollout), degraded (the
    /// first check that found a workload unhealthy) or up_to_date (the
    /// first healthy check after degraded ones).
    outcome: String,
    stage: Option<String>,
    message: Option<String>,
    objects: Vec<AppliedObject>,
}

/// One object a deploy applied.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AppliedObject {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    /// created, configured, unchanged or deleted (pruned).
    action: String,
}

/// What chump last applied for a source (its inventory).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Objects {
    source_id: i64,
    /// The commit the inventory was built from (null: nothing applied yet).
    commit: Option<String>,
    /// The image the build gives the source's container.
    desired_image: Option<String>,
    /// In the build's order.
    objects: Vec<InventoryObject>,
}

/// One object chump applied for a source.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InventoryObject {
    api_version: String,
    kind: String,
    /// null for cluster-scoped objects.
    namespace: Option<String>,
    name: String,
    /// The commit whose deploy last changed (or created) the object.
    commit: String,
}

/// A page of history, newest first; pass `next_before` as `before` for the next.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HistoryPage {
    history: Vec<HistoryEntry>,
    next_before: Option<i64>,
}

/// Every error: a message, and for validation the bad fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Error {
    msg: String,
    errors: Option<std::collections::BTreeMap<String, String>>,
}

/// A delete with `prune=true` under way.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Deleting {
    /// [INFO] Source is being deleted: the objects chump applied for it are pruned first
    msg: String,
    /// Always true.
    deleting: bool,
}

/// A message with the source it concerns.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SourceMessage {
    msg: String,
    source: Source,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "chump", description = "GitOps deployer for Kubernetes: git sources, deploy history, triggers."),
    paths(
        doc::index, doc::health, doc::openapi, doc::list, doc::create, doc::create_legacy, doc::get,
        doc::patch, doc::put, doc::delete, doc::patch_legacy, doc::put_legacy, doc::delete_legacy,
        doc::status, doc::objects, doc::history_of_source, doc::check, doc::history, doc::webhook, doc::metrics,
        doc::healthz, doc::readyz
    ),
    components(schemas(SourceBody, Source, Status, HistoryEntry, AppliedObject, Objects, InventoryObject, HistoryPage, Error, SourceMessage, Deleting)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/openapi.json`
pub async fn document() -> Json<Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null))
}

/// One item per route: the operations the router serves. The handlers live
/// in their modules; these declarations carry their documentation.
#[allow(dead_code)]
mod doc {
    use super::*;

    const CONFLICT: &str =
        "another source has the target ([WARN] Source already exist!), or the source is being deleted";
    const OUTCOME: &str =
        "deployed, up_to_date, failed, deleted, degraded or superseded (400 for any other)";
    const PRUNE: &str = "true: delete the objects chump applied for the source first (202 while \
        they are pruned; 200 when none were recorded); false (default): delete the source at once, \
        leaving its objects";

    #[utoipa::path(get, path = "/api", responses((status = 200, description = "`{\"endpoints\": [...]}`")))]
    pub fn index() {}
    #[utoipa::path(get, path = "/api/health", responses((status = 200, description = "`{\"status\": \"healthy\"}`")))]
    pub fn health() {}
    #[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "This document")))]
    pub fn openapi() {}
    #[utoipa::path(get, path = "/api/sources", responses((status = 200, description = "`{\"sources\": [Source...]}` sorted by id, each with its status")))]
    pub fn list() {}
    #[utoipa::path(post, path = "/api/sources", request_body = SourceBody, responses(
        (status = 201, body = SourceMessage), (status = 400, body = Error), (status = 409, body = Error, description = "[WARN] Source already exist!"),
        (status = 413, body = Error), (status = 415, body = Error)))]
    pub fn create() {}
    #[utoipa::path(post, path = "/api/sources/create", request_body = SourceBody, responses(
        (status = 201, body = SourceMessage), (status = 400, body = Error), (status = 409, body = Error)))]
    pub fn create_legacy() {}
    #[utoipa::path(get, path = "/api/sources/{id}", params(("id" = i64, Path)), responses(
        (status = 200, body = Source), (status = 400, body = Error), (status = 404, body = Error, description = "[WARN] Source doesn't exist!")))]
    pub fn get() {}
    #[utoipa::path(patch, path = "/api/sources/{id}", params(("id" = i64, Path)), request_body = SourceBody, responses(
        (status = 200, body = SourceMessage), (status = 400, body = Error), (status = 404, body = Error), (status = 409, body = Error, description = CONFLICT)))]
    pub fn patch() {}
    #[utoipa::path(put, path = "/api/sources/{id}", params(("id" = i64, Path)), request_body = SourceBody, responses(
        (status = 200, body = SourceMessage), (status = 400, body = Error), (status = 404, body = Error), (status = 409, body = Error, description = CONFLICT)))]
    pub fn put() {}
    #[utoipa::path(delete, path = "/api/sources/{id}", params(("id" = i64, Path), ("prune" = Option<bool>, Query, description = PRUNE)), responses(
        (status = 200, description = "[INFO] Source has been deleted!"), (status = 202, body = Deleting, description = "pruning its objects first"),
        (status = 400, body = Error, description = "a bad id, prune not true or false, or an unknown query parameter"), (status = 404, body = Error)))]
    pub fn delete() {}
    #[utoipa::path(patch, path = "/api/sources/{id}/update", params(("id" = i64, Path)), request_body = SourceBody, responses(
        (status = 200, body = SourceMessage), (status = 400, body = Error), (status = 404, body = Error), (status = 409, body = Error, description = CONFLICT)))]
    pub fn patch_legacy() {}
    #[utoipa::path(put, path = "/api/sources/{id}/update", params(("id" = i64, Path)), request_body = SourceBody, responses(
        (status = 200, body = SourceMessage), (status = 400, body = Error), (status = 404, body = Error), (status = 409, body = Error, description = CONFLICT)))]
    pub fn put_legacy() {}
    #[utoipa::path(delete, path = "/api/sources/{id}/delete", params(("id" = i64, Path), ("prune" = Option<bool>, Query, description = PRUNE)), responses(
        (status = 200, description = "[INFO] Source has been deleted!"), (status = 202, body = Deleting, description = "pruning its objects first"),
        (status = 400, body = Error), (status = 404, body = Error)))]
    pub fn delete_legacy() {}
    #[utoipa::path(get, path = "/api/sources/{id}/status", params(("id" = i64, Path)), responses(
        (status = 200, body = Status), (status = 404, body = Error)))]
    pub fn status() {}
    #[utoipa::path(get, path = "/api/sources/{id}/objects", params(("id" = i64, Path)), responses(
        (status = 200, body = Objects), (status = 400, body = Error), (status = 404, body = Error)))]
    pub fn objects() {}
    #[utoipa::path(get, path = "/api/sources/{id}/history", params(("id" = i64, Path),
        ("limit" = Option<u32>, Query, description = "1-500, default 50"), ("before" = Option<i64>, Query, description = "paging cursor: entries with a smaller id"),
        ("outcome" = Option<String>, Query, description = OUTCOME)), responses(
        (status = 200, body = HistoryPage), (status = 400, body = Error), (status = 404, body = Error)))]
    pub fn history_of_source() {}
    #[utoipa::path(post, path = "/api/sources/{id}/check", params(("id" = i64, Path)), responses(
        (status = 202, description = "`{\"msg\", \"result\": queued|already_queued|already_running|queued_after_running, \"queued_at\"}`"),
        (status = 404, body = Error), (status = 409, body = Error, description = "the source is being deleted")))]
    pub fn check() {}
    #[utoipa::path(get, path = "/api/history", params(
        ("limit" = Option<u32>, Query), ("before" = Option<i64>, Query), ("outcome" = Option<String>, Query, description = OUTCOME),
        ("namespace" = Option<String>, Query), ("source_id" = Option<i64>, Query), ("since" = Option<String>, Query, description = "RFC 3339")),
        responses((status = 200, body = HistoryPage), (status = 400, body = Error)))]
    pub fn history() {}
    #[utoipa::path(post, path = "/api/webhooks/{provider}", params(("provider" = String, Path, description = "github, gitlab, gitea or generic")),
        responses((status = 202, description = "`{\"msg\", \"triggered\": [ids]}`; non-push events are ignored"),
        (status = 400, body = Error), (status = 401, body = Error, description = "wrong or missing signature")))]
    pub fn webhook() {}
    #[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
    pub fn metrics() {}
    #[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is alive")))]
    pub fn healthz() {}
    #[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = Error)))]
    pub fn readyz() {}
}
