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
    /// Roll back to the last successful deploy when a deploy fails at
    /// apply or rollout (null: the service's CHUMP_AUTO_ROLLBACK).
    auto_rollback: Option<bool>,
    /// The ServiceAccount chump impersonates for every request it makes to
    /// the cluster for this source: `namespace/name`, or a name in the
    /// source's namespace (null: the service's
    /// CHUMP_DEFAULT_SERVICE_ACCOUNT, else chump's own identity; required
    /// when the service sets CHUMP_REQUIRE_SERVICE_ACCOUNT without a
    /// default).
    service_account: Option<String>,
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
    /// null: the service's default (CHUMP_AUTO_ROLLBACK).
    auto_rollback: Option<bool>,
    /// As given (`namespace/name` or a name in the source's namespace);
    /// null: the service's CHUMP_DEFAULT_SERVICE_ACCOUNT, if any.
    service_account: Option<String>,
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
    /// After a rollback: the commit chump stays away from until the branch
    /// moves (null: not pinned).
    pinned: Option<Pin>,
    /// A rollback asked for and not yet recorded: the entry it goes to.
    rollback_to: Option<i64>,
}

/// A pin: checks that find the branch at `commit` leave the cluster alone.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Pin {
    commit: String,
    /// The rollback, from what to what, and how it resumes.
    reason: String,
    /// The rollback's history entry.
    entry: Option<i64>,
    since: String,
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
    /// schedule, manual, webhook, delete (the prune of a source deleted
    /// with `prune=true`) or auto_rollback (after a failed deploy of a
    /// source with auto_rollback).
    trigger: String,
    started_at: String,
    finished_at: String,
    commit: Option<String>,
    desired_image: Option<String>,
    /// The image running before the check.
    running_image: Option<String>,
    /// deployed, failed, deleted (its objects pruned, the source gone),
    /// superseded (the branch moved during the rollout), degraded (the
    /// first check that found a workload unhealthy), up_to_date (the
    /// first healthy check after degraded ones) or rolled_back (a recorded
    /// deploy's manifests applied again and rolled out).
    outcome: String,
    stage: Option<String>,
    message: Option<String>,
    objects: Vec<AppliedObject>,
    /// The rendered manifests the check applied: kept, dropped (by
    /// retention) or too_large; absent when it applied none.
    manifests: Option<String>,
    /// A rollback (outcome rolled_back, or failed): the entry re-applied.
    rollback_to: Option<i64>,
}

/// How an entry's render differs from another's.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Diff {
    entry: i64,
    /// The entry compared with (null: none earlier with manifests, so
    /// every object is added).
    against: Option<i64>,
    commit: Option<String>,
    against_commit: Option<String>,
    /// Objects added, removed or changed, each with a unified diff of its
    /// YAML (`a/` against, `b/` entry; Secret values masked, a changed one
    /// shown as `*** (changed)`).
    objects: Vec<ObjectDiff>,
    /// Objects the same in both.
    unchanged: usize,
}

/// One object that differs.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ObjectDiff {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    /// added, removed or changed.
    change: String,
    diff: String,
}

/// A queued rollback.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RollbackQueued {
    msg: String,
    /// queued, already_queued or queued_after_running.
    result: String,
    queued_at: String,
    /// The history entry whose manifests are applied again.
    to: i64,
    commit: Option<String>,
}

/// The body of a rollback (optional).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RollbackBody {
    /// A history entry of the source with kept manifests (default: the
    /// last successful deploy of another commit before the live one).
    to: Option<i64>,
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
        doc::status, doc::objects, doc::history_of_source, doc::check, doc::rollback, doc::unpin, doc::history,
        doc::history_entry, doc::manifests, doc::diff, doc::notifications, doc::notification_test, doc::webhook, doc::metrics,
        doc::healthz, doc::readyz, doc::root, doc::dashboard
    ),
    components(schemas(SourceBody, Source, Status, Pin, HistoryEntry, AppliedObject, Objects, InventoryObject, HistoryPage, Error, SourceMessage, Deleting,
        Diff, ObjectDiff, RollbackQueued, RollbackBody)),
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
        "deployed, up_to_date, failed, deleted, degraded, superseded or rolled_back (400 for any other)";
    const PRUNE: &str = "true: delete the objects chump applied for the source first (202 while \
        they are pruned; 200 when none were recorded); false (default): delete the source at once, \
        leaving its objects";

    #[utoipa::path(get, path = "/api", responses((status = 200, description = "`{\"endpoints\": [...]}`")))]
    pub fn index() {}
    #[utoipa::path(get, path = "/api/health", responses((status = 200, description = "`{\"status\": \"healthy\"}`")))]
    pub fn health() {}
    #[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "This document")))]
    pub fn openapi() {}
    #[utoipa::path(get, path = "/api/sources", params(
        ("limit" = Option<u32>, Query, description = "a page of at most this many sources (1 to 1000); without it, every source (the original tool's answer)"),
        ("after" = Option<i64>, Query, description = "with limit: only sources with an id above this (the previous page's `next_after`)"),
    ), responses((status = 200, description = "`{\"sources\": [Source...]}` sorted by id, each with its status; with `limit`, also `next_after`: the cursor of the next page, null on the last"),
        (status = 400, body = Error, description = "a bad limit or after, after without limit, or an unknown parameter")))]
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
    #[utoipa::path(post, path = "/api/sources/{id}/rollback", params(("id" = i64, Path)), request_body(content = RollbackBody, description = "optional"), responses(
        (status = 202, body = RollbackQueued), (status = 400, body = Error, description = "a bad body, or `to` not an entry of this source"),
        (status = 404, body = Error), (status = 409, body = Error, description = "nothing to roll back to (no earlier deploy, or its manifests were not kept), or the source is being deleted")))]
    pub fn rollback() {}
    #[utoipa::path(post, path = "/api/sources/{id}/unpin", params(("id" = i64, Path)), responses(
        (status = 202, description = "`{\"msg\", \"result\", \"queued_at\"}`: unpinned, a check queued"),
        (status = 404, body = Error), (status = 409, body = Error, description = "not pinned")))]
    pub fn unpin() {}
    #[utoipa::path(get, path = "/api/history/{id}", params(("id" = i64, Path)), responses(
        (status = 200, body = HistoryEntry), (status = 400, body = Error), (status = 404, body = Error)))]
    pub fn history_entry() {}
    #[utoipa::path(get, path = "/api/history/{id}/manifests", params(("id" = i64, Path)), responses(
        (status = 200, content_type = "application/yaml", description = "the render applied, multi-document YAML, Secret values and URL credentials masked"),
        (status = 404, body = Error, description = "no such entry, or no manifests kept (dropped by retention, too large, or none applied): the message says which")))]
    pub fn manifests() {}
    #[utoipa::path(get, path = "/api/history/{id}/diff", params(("id" = i64, Path),
        ("against" = Option<i64>, Query, description = "another entry (default: the source's previous entry that applied a render; none: every object is added)")), responses(
        (status = 200, body = Diff), (status = 400, body = Error), (status = 404, body = Error, description = "an entry missing, or without kept manifests")))]
    pub fn diff() {}
    #[utoipa::path(get, path = "/api/history", params(
        ("limit" = Option<u32>, Query), ("before" = Option<i64>, Query), ("outcome" = Option<String>, Query, description = OUTCOME),
        ("namespace" = Option<String>, Query), ("source_id" = Option<i64>, Query), ("since" = Option<String>, Query, description = "RFC 3339"),
        ("at" = Option<String>, Query, description = "RFC 3339: instead of a page, for each source the entry of the deploy live then (not with before or since)")),
        responses((status = 200, body = HistoryPage), (status = 400, body = Error)))]
    pub fn history() {}
    #[utoipa::path(post, path = "/api/webhooks/{provider}", params(("provider" = String, Path, description = "github, gitlab, gitea or generic")),
        responses((status = 202, description = "`{\"msg\", \"triggered\": [ids]}`; non-push events are ignored"),
        (status = 400, body = Error), (status = 401, body = Error, description = "wrong or missing signature")))]
    pub fn webhook() {}
    #[utoipa::path(get, path = "/api/notifications", responses(
        (status = 200, description = "`{\"config\": file, \"targets\": [{name, type, url (masked: no secret, token or path), provider, events, selector, queued, delivered, failed, dropped, last: {result, at, status, error}}]}`")))]
    pub fn notifications() {}
    #[utoipa::path(post, path = "/api/notifications/{target}/test", params(("target" = String, Path, description = "a target's name from CHUMP_NOTIFY_CONFIG")), responses(
        (status = 200, description = "`{\"target\", \"result\": \"delivered\", \"status\"}`: one test event delivered now"),
        (status = 400, body = Error, description = "a commit_status target (a status needs a commit)"),
        (status = 404, body = Error, description = "no such target"),
        (status = 502, description = "`{\"target\", \"result\": \"failed\", \"status\", \"error\"}`: the receiver failed or did not answer")))]
    pub fn notification_test() {}
    #[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
    pub fn metrics() {}
    #[utoipa::path(get, path = "/", responses(
        (status = 200, description = "Without `text/html` in `Accept`: the original tool's `{\"app_name\": \"chump\", \"description\": ...}`; \
            with it (a browser): the dashboard page, as `/ui/`")))]
    pub fn root() {}
    #[utoipa::path(get, path = "/ui/", responses(
        (status = 200, description = "The dashboard (text/html): a read-only page over this API; its files are `/ui/app.js`, `/ui/app.css`, `/ui/icon.svg`")))]
    pub fn dashboard() {}
    #[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is alive")))]
    pub fn healthz() {}
    #[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = Error)))]
    pub fn readyz() {}
}
