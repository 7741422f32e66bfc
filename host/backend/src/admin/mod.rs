//! The admin API: people manage devices, agents, revocations and the audit
//! log here, never on the device-facing listener.
//!
//! 1. It listens on a Unix socket of mode 0600 ([`bind_admin_socket`]), so
//!    only the backend's own user can connect, and it is not reachable from
//!    the network at all. (TCP with TLS is not offered yet.)
//! 2. Every request carries `authorization: Bearer <admin credential>`: a
//!    person's own random credential, looked up by its SHA-256. A device or
//!    agent access token never authorizes anything here, and one that is
//!    presented is refused as such.
//! 3. Roles: `admin` may do everything; `auditor` only reads (lists, show,
//!    inventory, the audit log, tickets); `approver` reads and decides the
//!    approval tickets of its agents.
//! 4. Bodies are JSON objects; an unknown field, a missing one or a value
//!    of the wrong type is refused with the field's name, and a refused
//!    request changes nothing.
//! 5. Every request, allowed or refused (authentication and role failures
//!    included), appends one `admin` record to the audit log naming the
//!    principal. A read whose record cannot be written is not answered.
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /v1/whoami` | any | the caller's principal and roles |
//! | `GET /v1/admins` | read | principals (never their credentials) |
//! | `POST /v1/admins/add` | admin | `{name, role, agents?}`: a new principal; its credential is in the answer, once |
//! | `GET /v1/devices` | read | enrolled devices |
//! | `POST /v1/devices/enroll` | admin | `{id, owner, public_key}` |
//! | `POST /v1/devices/revoke` | admin | `{id, reason?}` |
//! | `POST /v1/devices/invite` | admin | `{owner, ttl_s?}`: a one-time enrolment code |
//! | `GET /v1/agents` | read | live agents |
//! | `GET /v1/agents/show?name=` | read | one agent |
//! | `POST /v1/agents/register` | admin | `{name, owner, description?, digests, devices?, grants?, max_token_lifetime_s?, max_instances_per_device?}` |
//! | `POST /v1/agents/update` | admin | `{name, …any of the above but name}`; a changed digest, device or grant list bumps the generation |
//! | `POST /v1/agents/review` | admin | `{name}`: record a privilege review |
//! | `POST /v1/agents/deprovision` | admin | `{name}`: remove, leaving a tombstone |
//! | `POST /v1/revoke` | admin | `{token \| instance \| agent \| device \| all: true, reason?}` |
//! | `POST /v1/import` | admin | `{toml}`: apply a config file's grants, devices and agents |
//! | `GET /v1/inventory?review_max_age_days=` | read | per agent: credentials, systems, last review, how it is revoked |
//! | `GET /v1/audit?from=&tail=&limit=` | read | a page of the audit log and its head |
//! | `GET /v1/audit/verify?expected_head=SEQ:HASH` | read | verify the chain, the signed checkpoints and an exported head |
//! | `GET /v1/policies` / `GET /v1/policies/show?agent=` | read | policies (TOML), `*` is the global default |
//! | `POST /v1/policies/set` | admin | `{toml}`: one policy document (`agent = …` and its rules); applies to the next call |
//! | `POST /v1/policies/remove` | admin | `{agent}` |
//! | `POST /v1/policies/check` | read | `{agent, method, url, user?, grant?}`: which rule decides, and which sequence and limit rules apply |
//! | `GET /v1/approvals?status=&limit=` / `GET /v1/approvals/show?id=` | approver, auditor | tickets as the backend rendered them (an approver sees its agents only) |
//! | `POST /v1/approvals/approve` / `POST /v1/approvals/deny` | approver | `{id}`: decide a pending ticket of one of the approver's agents |
//! | `GET /v1/approvals/stats` | approver, auditor | per agent: calls allowed vs sent for approval, approval latency, approve/deny counts |
//!
//! Not here yet: redeeming enrolment codes (a device-facing route).

pub mod api;
mod decisions;
mod input;
mod routes;
#[cfg(test)]
mod tests;

use crate::exchange::{SharedEntropy, TokenService};
use crate::store::{AuditEntry, Role, StoreError};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// Largest request body (an imported config is the largest), bytes.
const MAX_BODY: usize = 1 << 20;
/// Time allowed to receive a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest audit reason written, bytes: reasons are our words plus short
/// caller-given names, never payloads.
const MAX_REASON: usize = 1024;

/// What the admin API runs on.
pub struct AdminContext {
    tokens: Arc<TokenService>,
    entropy: SharedEntropy,
}

impl AdminContext {
    /// The token service (its store, clock, revocations and audit log) and a
    /// random source for agent ids, credentials and enrolment codes.
    pub fn new(tokens: Arc<TokenService>, entropy: SharedEntropy) -> AdminContext {
        AdminContext { tokens, entropy }
    }
}

/// The admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminSocketError {
    /// Something that is not a socket is in the way: it is never removed.
    #[error("{} exists and is not a socket; remove it or choose another --admin-socket", .0.display())]
    NotASocket(PathBuf),
    /// Another server answers on the socket.
    #[error("{} is in use by a running server", .0.display())]
    InUse(PathBuf),
    /// The path has no parent directory or file name.
    #[error("{} is not a usable socket path", .0.display())]
    BadPath(PathBuf),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Bind the admin socket at `path` with mode 0600. A stale socket (no server
/// answers on it) is replaced; anything else at `path` is refused. Call it
/// inside a tokio runtime.
///
/// The socket is bound inside a fresh directory of mode 0700, set to 0600
/// there and only then renamed into place, so there is no moment at which
/// another user could connect to it.
#[cfg(unix)]
pub fn bind_admin_socket(path: &Path) -> Result<UnixListener, AdminSocketError> {
    use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| AdminSocketError::Io { path: p, source }
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(AdminSocketError::BadPath(path.to_owned()));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(AdminSocketError::InUse(path.to_owned())),
                // Nobody listens: left over from a server that was killed.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io(path))?;
                }
                Err(e) => {
                    return Err(AdminSocketError::Io {
                        path: path.to_owned(),
                        source: e,
                    });
                }
            }
        }
        Ok(_) => return Err(AdminSocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AdminSocketError::Io {
                path: path.to_owned(),
                source: e,
            });
        }
    }
    let mut suffix = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut suffix);
    let staging = parent.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io(&staging))?;
    let bound = staging.join("s");
    let result = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&bound).map_err(io(&bound))?;
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&bound))?;
        std::fs::rename(&bound, path).map_err(io(path))?;
        listener.set_nonblocking(true).map_err(io(path))?;
        UnixListener::from_std(listener).map_err(io(path))
    })();
    let _ = std::fs::remove_file(&bound);
    let _ = std::fs::remove_dir(&staging);
    result
}

/// Serve the admin API on `listener` until the process ends.
pub async fn serve_admin(listener: UnixListener, ctx: AdminContext) -> std::io::Result<()> {
    let ctx = Arc::new(ctx);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: transient, and the
                // device-facing side must keep running meanwhile.
                tracing::warn!("admin socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ctx = Arc::clone(&ctx);
                async move { Ok::<_, std::convert::Infallible>(respond(ctx, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A request, read off the wire, ready for the blocking handler.
struct Incoming {
    method: Method,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    json_body: bool,
    body: Result<Bytes, AdminError>,
}

async fn respond(
    ctx: Arc<AdminContext>,
    req: hyper::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(_)) => Err(AdminError::TooLarge(format!(
                "the request body is larger than {MAX_BODY} bytes or was cut off"
            ))),
            Err(_) => Err(AdminError::invalid("body", "not received in time")),
        };
    let incoming = Incoming {
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        authorization: parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        json_body: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            }),
        method: parts.method,
        body,
    };
    // The store is synchronous and commits with fsync: off the async threads.
    let (status, value) = match tokio::task::spawn_blocking(move || ctx.handle(incoming)).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!("admin handler failed: {e}");
            let e = AdminError::Internal("the handler panicked".into());
            (e.status(), e.body())
        }
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&value).unwrap_or_default(),
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Why an admin request was refused. Mapped to a status and a JSON body in
/// one place, [`AdminError::status`] and [`AdminError::body`].
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    MediaType(String),
    /// The detail goes to the log and the audit record; the caller is told
    /// where to look.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdminError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> AdminError {
        AdminError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::Invalid { .. } => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            AdminError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    fn body(&self) -> serde_json::Value {
        let error = match self {
            AdminError::Unauthorized(_) => "unauthorized",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::Invalid { .. } | AdminError::TooLarge(_) | AdminError::MediaType(_) => {
                "invalid_request"
            }
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::MethodNotAllowed(_) => "method_not_allowed",
            AdminError::Internal(_) => "server_error",
        };
        let message = match self {
            AdminError::Internal(_) => {
                "internal error in the backend; its log and the audit record have the details"
                    .to_owned()
            }
            other => other.to_string(),
        };
        serde_json::to_value(api::ErrorBody {
            error: error.to_owned(),
            message,
            field: self.field().map(str::to_owned),
        })
        .unwrap_or_default()
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        match e {
            StoreError::AlreadyExists { .. } | StoreError::StaleGeneration { .. } => {
                AdminError::Conflict(e.to_string())
            }
            StoreError::NotFound { .. } => AdminError::NotFound(e.to_string()),
            StoreError::Invalid { field, reason } => AdminError::Invalid {
                field: field.to_owned(),
                reason,
            },
            other => {
                tracing::error!("admin API: store failure: {other}");
                AdminError::Internal(other.to_string())
            }
        }
    }
}

/// What a route needs of the caller's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any authenticated principal.
    Any,
    /// Admin or auditor.
    Read,
    /// Admin only.
    Write,
    /// Admin, auditor or approver (an approver sees only its agents).
    ApprovalRead,
    /// Admin or approver (an approver decides only for its agents).
    ApprovalDecide,
}

/// The routes, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    WhoAmI,
    AdminList,
    AdminAdd,
    DeviceList,
    DeviceEnroll,
    DeviceRevoke,
    DeviceInvite,
    AgentList,
    AgentShow,
    AgentRegister,
    AgentUpdate,
    AgentReview,
    AgentDeprovision,
    Revoke,
    KeysRotate,
    Import,
    Inventory,
    AuditRange,
    AuditVerify,
    PolicyList,
    PolicyShow,
    PolicySet,
    PolicyRemove,
    PolicyCheck,
    ApprovalList,
    ApprovalShow,
    ApprovalApprove,
    ApprovalDeny,
    ApprovalStats,
}

const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/v1/whoami", Route::WhoAmI),
    ("GET", "/v1/admins", Route::AdminList),
    ("POST", "/v1/admins/add", Route::AdminAdd),
    ("GET", "/v1/devices", Route::DeviceList),
    ("POST", "/v1/devices/enroll", Route::DeviceEnroll),
    ("POST", "/v1/devices/revoke", Route::DeviceRevoke),
    ("POST", "/v1/devices/invite", Route::DeviceInvite),
    ("GET", "/v1/agents", Route::AgentList),
    ("GET", "/v1/agents/show", Route::AgentShow),
    ("POST", "/v1/agents/register", Route::AgentRegister),
    ("POST", "/v1/agents/update", Route::AgentUpdate),
    ("POST", "/v1/agents/review", Route::AgentReview),
    ("POST", "/v1/agents/deprovision", Route::AgentDeprovision),
    ("POST", "/v1/revoke", Route::Revoke),
    ("POST", "/v1/keys/rotate", Route::KeysRotate),
    ("POST", "/v1/import", Route::Import),
    ("GET", "/v1/inventory", Route::Inventory),
    ("GET", "/v1/audit", Route::AuditRange),
    ("GET", "/v1/audit/verify", Route::AuditVerify),
    ("GET", "/v1/policies", Route::PolicyList),
    ("GET", "/v1/policies/show", Route::PolicyShow),
    ("POST", "/v1/policies/set", Route::PolicySet),
    ("POST", "/v1/policies/remove", Route::PolicyRemove),
    ("POST", "/v1/policies/check", Route::PolicyCheck),
    ("GET", "/v1/approvals", Route::ApprovalList),
    ("GET", "/v1/approvals/show", Route::ApprovalShow),
    ("POST", "/v1/approvals/approve", Route::ApprovalApprove),
    ("POST", "/v1/approvals/deny", Route::ApprovalDeny),
    ("GET", "/v1/approvals/stats", Route::ApprovalStats),
];

impl Route {
    fn find(method: &Method, path: &str) -> Result<Route, AdminError> {
        let mut path_known = false;
        for (m, p, route) in ROUTES {
            if *p == path {
                path_known = true;
                if *m == method.as_str() {
                    return Ok(*route);
                }
            }
        }
        if path_known {
            Err(AdminError::MethodNotAllowed(format!(
                "{} does not take {}",
                input::shown(path),
                input::shown(method.as_str())
            )))
        } else {
            Err(AdminError::NotFound(format!(
                "no admin route {}",
                input::shown(path)
            )))
        }
    }

    /// The action's name in audit records and messages.
    fn action(self) -> &'static str {
        match self {
            Route::WhoAmI => "whoami",
            Route::AdminList => "admin list",
            Route::AdminAdd => "admin add",
            Route::DeviceList => "device list",
            Route::DeviceEnroll => "device enroll",
            Route::DeviceRevoke => "device revoke",
            Route::DeviceInvite => "device invite",
            Route::AgentList => "agent list",
            Route::AgentShow => "agent show",
            Route::AgentRegister => "agent register",
            Route::AgentUpdate => "agent update",
            Route::AgentReview => "agent review",
            Route::AgentDeprovision => "agent deprovision",
            Route::Revoke => "revoke",
            Route::KeysRotate => "keys rotate",
            Route::Import => "import",
            Route::Inventory => "inventory",
            Route::AuditRange => "audit read",
            Route::AuditVerify => "audit verify",
            Route::PolicyList => "policy list",
            Route::PolicyShow => "policy show",
            Route::PolicySet => "policy set",
            Route::PolicyRemove => "policy remove",
            Route::PolicyCheck => "policy check",
            Route::ApprovalList => "approvals list",
            Route::ApprovalShow => "approvals show",
            Route::ApprovalApprove => "approvals approve",
            Route::ApprovalDeny => "approvals deny",
            Route::ApprovalStats => "approvals stats",
        }
    }

    fn access(self) -> Access {
        match self {
            Route::WhoAmI => Access::Any,
            Route::AdminList
            | Route::DeviceList
            | Route::AgentList
            | Route::AgentShow
            | Route::Inventory
            | Route::AuditRange
            | Route::AuditVerify
            | Route::PolicyList
            | Route::PolicyShow
            | Route::PolicyCheck => Access::Read,
            Route::ApprovalList | Route::ApprovalShow | Route::ApprovalStats => {
                Access::ApprovalRead
            }
            Route::ApprovalApprove | Route::ApprovalDeny => Access::ApprovalDecide,
            Route::PolicySet | Route::PolicyRemove => Access::Write,
            Route::AdminAdd
            | Route::DeviceEnroll
            | Route::DeviceRevoke
            | Route::DeviceInvite
            | Route::AgentRegister
            | Route::AgentUpdate
            | Route::AgentReview
            | Route::AgentDeprovision
            | Route::Revoke
            | Route::KeysRotate
            | Route::Import => Access::Write,
        }
    }

    fn is_post(self) -> bool {
        ROUTES.iter().any(|(m, _, r)| *r == self && *m == "POST")
    }
}

/// What the audit record of a request says besides the outcome: filled in
/// by the handler as it validates (only validated names go into the
/// structured fields).
#[derive(Debug, Default)]
struct Note {
    detail: Option<String>,
    agent: Option<String>,
    device: Option<String>,
    instance: Option<String>,
    jti: Option<String>,
}

/// An authenticated caller.
struct Principal {
    name: String,
    roles: Vec<Role>,
}

impl AdminContext {
    /// One request, start to end: authenticate, route, check the role, run,
    /// audit.
    fn handle(&self, req: Incoming) -> (StatusCode, serde_json::Value) {
        let principal = match self.authenticate(req.authorization.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let what = format!(
                    "{} {}: authentication refused",
                    input::shown(req.method.as_str()),
                    input::shown(&req.path)
                );
                return self.finish(None, &what, Note::default(), Err(e), false);
            }
        };
        let route = match Route::find(&req.method, &req.path) {
            Ok(r) => r,
            Err(e) => {
                let what = format!(
                    "{} {}",
                    input::shown(req.method.as_str()),
                    input::shown(&req.path)
                );
                return self.finish(Some(&principal.name), &what, Note::default(), Err(e), false);
            }
        };
        let mut note = Note::default();
        let result = self
            .authorize(&principal, route)
            .and_then(|()| check_body_kind(route, &req))
            .and_then(|()| self.run(route, &principal, &req, &mut note));
        let writes = matches!(route.access(), Access::Write | Access::ApprovalDecide);
        self.finish(Some(&principal.name), route.action(), note, result, writes)
    }

    /// Audit the outcome and turn it into an answer. Without its audit
    /// record a read is not answered; a write that was done is reported as
    /// done but unaudited.
    fn finish(
        &self,
        principal: Option<&str>,
        action: &str,
        note: Note,
        result: Result<serde_json::Value, AdminError>,
        writes: bool,
    ) -> (StatusCode, serde_json::Value) {
        let detail = note.detail.as_deref().unwrap_or("");
        let reason = match &result {
            Ok(_) => format!("{action}{detail}"),
            Err(AdminError::Internal(inner)) => {
                format!("{action}{detail}: internal error: {inner}")
            }
            Err(e) => format!("{action}{detail}: {e}"),
        };
        let entry = AuditEntry {
            kind: "admin".into(),
            decision: if result.is_ok() { "allow" } else { "deny" }.into(),
            admin: principal.map(str::to_owned),
            reason: Some(clean(&reason)),
            agent: note.agent,
            device: note.device,
            instance: note.instance,
            jti: note.jti,
            ..AuditEntry::default()
        };
        if let Err(e) = self.tokens.audit(entry) {
            tracing::error!("admin API: cannot write the audit record of {action:?}: {e}");
            let message = match (&result, writes) {
                (Ok(_), true) => {
                    "the change was made, but its audit record could not be written; see the backend log"
                }
                (Ok(_), false) => {
                    "not answered: the audit record of this read could not be written; see the backend log"
                }
                (Err(_), _) => {
                    "refused, and the audit record of the refusal could not be written; see the backend log"
                }
            };
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": "server_error", "message": message }),
            );
        }
        match result {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => (e.status(), e.body()),
        }
    }

    fn authenticate(&self, header: Option<&str>) -> Result<Principal, AdminError> {
        let header = header.ok_or_else(|| {
            AdminError::Unauthorized(
                "no admin credential: send authorization: Bearer <your admin credential>".into(),
            )
        })?;
        let credential = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, c)| c.trim())
            .ok_or_else(|| {
                AdminError::Unauthorized(
                    "the authorization header must be: Bearer <your admin credential>".into(),
                )
            })?;
        if looks_like_jwt(credential) {
            return Err(AdminError::Unauthorized(
                "access tokens never authorize admin calls: a device or agent token was presented; use your admin credential".into(),
            ));
        }
        if credential.is_empty() || credential.len() > 512 {
            return Err(AdminError::Unauthorized(
                "the admin credential is not known".into(),
            ));
        }
        let hash: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        match self.tokens.store().admin_by_credential_hash(&hash)? {
            Some(admin) => Ok(Principal {
                name: admin.name,
                roles: admin.roles,
            }),
            None => Err(AdminError::Unauthorized(
                "the admin credential is not known".into(),
            )),
        }
    }

    fn authorize(&self, p: &Principal, route: Route) -> Result<(), AdminError> {
        let ok = match route.access() {
            Access::Any => true,
            Access::Read => p
                .roles
                .iter()
                .any(|r| matches!(r, Role::Admin | Role::Auditor)),
            Access::Write => p.roles.iter().any(|r| matches!(r, Role::Admin)),
            Access::ApprovalRead => p
                .roles
                .iter()
                .any(|r| matches!(r, Role::Admin | Role::Auditor | Role::Approver { .. })),
            Access::ApprovalDecide => p
                .roles
                .iter()
                .any(|r| matches!(r, Role::Admin | Role::Approver { .. })),
        };
        if ok {
            return Ok(());
        }
        let needs = match route.access() {
            Access::Write => "the admin role",
            Access::ApprovalRead => "the admin, auditor or approver role",
            Access::ApprovalDecide => "the admin or approver role",
            _ => "the admin or auditor role",
        };
        let has: Vec<&str> = p.roles.iter().map(role_name).collect();
        let has = if has.is_empty() {
            "no role".to_owned()
        } else {
            format!("the role(s) {}", has.join(", "))
        };
        Err(AdminError::Forbidden(format!(
            "{} needs {needs}; {} has {has}",
            route.action(),
            p.name
        )))
    }
}

/// POST routes take a JSON body; GET routes take none.
fn check_body_kind(route: Route, req: &Incoming) -> Result<(), AdminError> {
    let empty = matches!(&req.body, Ok(b) if b.is_empty());
    if route.is_post() {
        if !req.json_body {
            return Err(AdminError::MediaType(
                "content-type must be application/json".into(),
            ));
        }
    } else if !empty {
        return Err(AdminError::invalid(
            "body",
            "this route takes no body (its parameters go in the query string)",
        ));
    }
    Ok(())
}

/// A role's name in messages.
fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Approver { .. } => "approver",
        Role::Auditor => "auditor",
    }
}

/// Three dot-separated base64url parts: the shape of a JWT (a device's
/// attestation or an agent's access token).
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

/// Audit text: control characters escaped, cut at [`MAX_REASON`] bytes.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON));
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > MAX_REASON {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}
