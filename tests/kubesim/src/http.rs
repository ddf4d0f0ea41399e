//! The HTTP/1.1 side: accepting connections, routing, list and watch responses, faults.
//!
//! Paths follow the real API server: `/api/v1/pods`, `/api/v1/namespaces/<ns>/pods`,
//! `/apis/<group>/<version>/<plural>`, single objects below them, and the discovery documents
//! (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`, `/version`). Only GET
//! is served: writes go through the handle, which is how a test plays the cluster's other actors.

use crate::api::{self, Serve};
use crate::select::FieldSelector;
use crate::store::{ApiError, ListSpec, WatchMsg, WatchSpec};
use crate::{Fault, FaultRule, RequestKind, RequestRecord, Shared, Target, lock};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

type Body = BoxBody<Bytes, io::Error>;

/// How long a watch without `timeoutSeconds` stays open (the real server picks 30–60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Accepts connections until `stop` turns true. During an outage every new connection is reset
/// at once (RST, `SO_LINGER` 0): the client sees what it sees when the API server's process or
/// its load balancer is gone. Connections opened before an outage or a restart are closed by
/// the epoch change.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        if shared.outage.load(Ordering::SeqCst) {
            // Ignored failure: the socket is being dropped either way.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let reset = Arc::new(Notify::new());
        let service = {
            let (shared, reset) = (shared.clone(), reset.clone());
            hyper::service::service_fn(move |req| handle(shared.clone(), req, reset.clone()))
        };
        let mut epoch = shared.epoch.subscribe();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                _ = epoch.changed() => {}
                _ = reset.notified() => {}
            }
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// `%XX` and `+` decoding of one query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters in order (`watch=true&resourceVersion=5` …).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    Collection { resource: usize, namespace: Option<String> },
    Object { resource: usize, namespace: Option<String>, name: String },
    NotFound,
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group((*g).to_string()),
        ["api", v] => Route::Resources(String::new(), (*v).to_string()),
        ["apis", g, v] => Route::Resources((*g).to_string(), (*v).to_string()),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let find = |plural: &str, namespaced: bool| {
        api::find_plural(group, version, plural)
            .filter(|id| api::resource(*id).is_some_and(|r| r.namespaced || !namespaced))
    };
    let found = match rest {
        [plural] => find(plural, false).map(|resource| Route::Collection { resource, namespace: None }),
        ["namespaces", ns, plural] => {
            find(plural, true).map(|resource| Route::Collection { resource, namespace: Some((*ns).to_string()) })
        }
        ["namespaces", ns, plural, name] => find(plural, true).map(|resource| Route::Object {
            resource,
            namespace: Some((*ns).to_string()),
            name: (*name).to_string(),
        }),
        [plural, name] => {
            find(plural, false).map(|resource| Route::Object { resource, namespace: None, name: (*name).to_string() })
        }
        _ => None,
    };
    found.unwrap_or(Route::NotFound)
}

fn request_kind(route: &Route, watch: bool) -> RequestKind {
    match route {
        Route::Collection { .. } if watch => RequestKind::Watch,
        Route::Collection { .. } => RequestKind::List,
        Route::Object { .. } => RequestKind::Get,
        Route::NotFound => RequestKind::Other,
        _ => RequestKind::Discovery,
    }
}

fn applies(rule: &FaultRule, kind: RequestKind, path: &str, query: &str) -> bool {
    let target = match rule.on {
        Target::Any => true,
        Target::Resources => matches!(kind, RequestKind::List | RequestKind::Watch | RequestKind::Get),
        Target::List => kind == RequestKind::List,
        Target::Watch => kind == RequestKind::Watch,
        Target::Discovery => kind == RequestKind::Discovery,
    };
    target
        && rule.count > 0
        && rule.path.as_deref().is_none_or(|p| path.contains(p))
        && rule.query.as_deref().is_none_or(|q| query.contains(q))
}

/// Takes one use of the first fault rule that applies to this request.
fn take_fault(shared: &Shared, kind: RequestKind, path: &str, query: &str) -> Option<Fault> {
    let mut rules = lock(&shared.faults);
    let rule = rules.iter_mut().find(|r| applies(r, kind, path, query))?;
    rule.count -= 1;
    let fault = rule.fault.clone();
    rules.retain(|r| r.count > 0);
    Some(fault)
}

/// A body that delivers `first` and then fails: the connection is cut without the terminating
/// chunk, so the client sees a truncated response. The pause lets hyper flush what was written
/// (an error right behind the data would discard the buffered bytes with the connection).
fn cut_body(first: Bytes) -> Body {
    let stream = futures_util::stream::unfold(Some(first), |first| async move {
        match first {
            Some(data) => Some((Ok(Frame::data(data)), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Err(io::Error::new(io::ErrorKind::ConnectionAborted, "kubesim: connection cut mid-response")),
                    None,
                ))
            }
        }
    });
    StreamBody::new(stream).boxed()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, reset: Arc<Notify>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let params = query_pairs(&query);
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let is_watch = matches!(param("watch"), Some("true" | "1"));
    let metadata_only = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let route = route(&path);
    let kind = request_kind(&route, is_watch);
    let mut record =
        RequestRecord { method: req.method().to_string(), path: path.clone(), query, kind, metadata_only, status: 0 };

    // A connection accepted before an outage may still deliver a request before its task sees
    // the epoch change: it gets no answer either.
    let fault = if shared.outage.load(Ordering::SeqCst) {
        Some(Fault::Reset)
    } else {
        take_fault(&shared, kind, &path, &record.query)
    };
    if let Some(fault) = fault {
        let response = match fault {
            Fault::Status(code) => {
                let reason = if code == 410 { "Expired" } else { "InternalError" };
                let e = ApiError::new(code, reason, format!("kubesim: injected HTTP {code}"));
                error_response(&e)
            }
            Fault::Truncate => {
                let mut r = Response::new(cut_body(Bytes::from_static(b"{\"kind\":\"PodList\",\"items\":[{")));
                r.headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
                r
            }
            Fault::Reset => {
                record.status = 0;
                lock(&shared.log).push(record);
                // The connection task drops the connection; this request never gets an answer.
                reset.notify_one();
                std::future::pending::<()>().await;
                return Ok(error_response(&ApiError::new(500, "InternalError", "unreachable")));
            }
        };
        record.status = response.status().as_u16();
        lock(&shared.log).push(record);
        return Ok(response);
    }

    let response = if req.method() != hyper::Method::GET {
        error_response(&ApiError::new(405, "MethodNotAllowed", "kubesim serves GET only; write through the handle"))
    } else {
        let serve = *lock(&shared.serve);
        serve_route(&shared, serve, route, &param, is_watch, metadata_only)
    };
    record.status = response.status().as_u16();
    lock(&shared.log).push(record);
    Ok(response)
}

fn serve_route<'a>(
    shared: &Shared,
    serve: Serve,
    route: Route,
    param: &dyn Fn(&str) -> Option<&'a str>,
    is_watch: bool,
    metadata_only: bool,
) -> Response<Body> {
    let not_found =
        || error_response(&ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    match route {
        Route::Version => json_response(
            200,
            &serde_json::json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-kubesim", "platform": "linux/amd64"}),
        ),
        Route::CoreVersions => json_response(200, &serve.core_versions(&shared.addr.to_string())),
        Route::Groups => json_response(200, &serve.group_list()),
        Route::Group(g) => serve.group(&g).map_or_else(not_found, |d| json_response(200, &d)),
        Route::Resources(g, v) => serve.resource_list(&g, &v).map_or_else(not_found, |d| json_response(200, &d)),
        Route::NotFound => not_found(),
        Route::Object { resource, namespace, name } => match api::resource(resource).filter(|r| serve.serves(r)) {
            None => not_found(),
            Some(info) => {
                let store = lock(&shared.store);
                match store.get(resource, namespace.as_deref().unwrap_or_default(), &name) {
                    Some(o) => json_response(200, &o),
                    None => error_response(&ApiError::new(
                        404,
                        "NotFound",
                        format!("{}.{} \"{name}\" not found", info.plural, info.group),
                    )),
                }
            }
        },
        Route::Collection { resource, namespace } => {
            let Some(info) = api::resource(resource).filter(|r| serve.serves(r)) else { return not_found() };
            let selector = match FieldSelector::parse(param("fieldSelector").unwrap_or_default(), info.kind) {
                Ok(s) => s,
                Err(message) => return error_response(&ApiError::new(400, "BadRequest", message)),
            };
            if param("labelSelector").is_some_and(|s| !s.is_empty()) {
                // Not needed by moat; refusing beats silently returning everything.
                return error_response(&ApiError::new(400, "BadRequest", "kubesim does not implement labelSelector"));
            }
            if is_watch {
                let spec = WatchSpec {
                    resource,
                    namespace,
                    selector,
                    metadata_only,
                    bookmarks: matches!(param("allowWatchBookmarks"), Some("true" | "1")),
                };
                let timeout = param("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok())
                    .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
                let initial = matches!(param("sendInitialEvents"), Some("true"));
                watch_response(shared, spec, param("resourceVersion"), initial, timeout)
            } else {
                let limit = param("limit").and_then(|l| l.parse::<usize>().ok());
                let spec = ListSpec {
                    resource,
                    namespace,
                    selector,
                    metadata_only,
                    limit,
                    continue_token: param("continue").filter(|c| !c.is_empty()).map(str::to_string),
                    resource_version: param("resourceVersion").map(str::to_string),
                    exact: param("resourceVersionMatch") == Some("Exact"),
                };
                let result = lock(&shared.store).list(spec);
                match result {
                    Ok(list) => json_response(200, &list),
                    Err(e) => error_response(&e),
                }
            }
        }
    }
}

fn watch_response(
    shared: &Shared,
    spec: WatchSpec,
    resource_version: Option<&str>,
    initial_events: bool,
    timeout: Duration,
) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Err(e) = lock(&shared.store).watch(spec, resource_version, initial_events, tx) {
        return error_response(&e);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures_util::stream::unfold((rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(WatchMsg::Line(b)) => Some((Ok(Frame::data(b)), (rx, false))),
                Some(WatchMsg::Abort) => Some((
                    Err(io::Error::new(io::ErrorKind::ConnectionAborted, "kubesim: watch dropped mid-stream")),
                    (rx, true),
                )),
                None => None,
            },
            // The server-side timeout ends the stream cleanly; the client resumes from its last
            // resourceVersion.
            _ = tokio::time::sleep_until(deadline) => None,
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_api_server_layout() {
        let pods = api::find_plural("", "v1", "pods").unwrap();
        let namespaces = api::find_plural("", "v1", "namespaces").unwrap();
        let gnp = api::find_plural("crd.projectcalico.org", "v1", "globalnetworkpolicies").unwrap();
        assert_eq!(route("/api/v1/pods"), Route::Collection { resource: pods, namespace: None });
        assert_eq!(
            route("/api/v1/namespaces/dmz/pods"),
            Route::Collection { resource: pods, namespace: Some("dmz".into()) }
        );
        assert_eq!(route("/api/v1/namespaces"), Route::Collection { resource: namespaces, namespace: None });
        assert_eq!(
            route("/api/v1/namespaces/dmz"),
            Route::Object { resource: namespaces, namespace: None, name: "dmz".into() }
        );
        assert_eq!(
            route("/apis/crd.projectcalico.org/v1/globalnetworkpolicies"),
            Route::Collection { resource: gnp, namespace: None }
        );
        assert_eq!(route("/apis/crd.projectcalico.org/v1/namespaces/x/globalnetworkpolicies"), Route::NotFound);
        assert_eq!(route("/apis/projectcalico.org/v3"), Route::Resources("projectcalico.org".into(), "v3".into()));
        assert_eq!(route("/api"), Route::CoreVersions);
    }

    #[test]
    fn query_components_are_decoded() {
        let q = query_pairs("fieldSelector=status.phase%21%3DFailed&watch=true&x");
        assert_eq!(q[0], ("fieldSelector".into(), "status.phase!=Failed".into()));
        assert_eq!(q[1], ("watch".into(), "true".into()));
        assert_eq!(q[2], ("x".into(), String::new()));
        assert_eq!(decode("100%"), "100%");
    }
}
