//! What the loopback stand-ins of the test harnesses share (`livekit-standin`, `moshi-standin`): a tiny
//! HTTP/1 server whose handler answers a status and a body, and a poison-tolerant lock.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

/// Locks `m`, taking the data of a poisoned lock as it is (a stand-in never gives up on a panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves every connection accepted on `listener` with `handler` (JSON content type), each for at most
/// 30 s. Runs until the task is dropped.
pub async fn accept<H, F>(listener: tokio::net::TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (StatusCode, String)> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = handler(req);
                async move {
                    let (status, body) = answer.await;
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap_or_default(),
                    )
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                hyper::server::conn::http1::Builder::new().serve_connection(io, service),
            )
            .await;
        });
    }
}
