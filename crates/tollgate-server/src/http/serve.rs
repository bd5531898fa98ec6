//! Serving the HTTP API: the accept loop, a limit on how long a request head may take, and a
//! graceful drain.
//!
//! `axum::serve` (which served the API before) never times out a request head, so a client that sent half a head and stopped,
//! or sent it a byte every second (a "slowloris"), held its connection and task forever. hyper
//! can time heads itself (`header_read_timeout`), but it arms a timer for every request, which
//! cost a measurable share of the API's throughput (bench/HISTORY.md). Instead each connection has one watchdog ticking every
//! [`WATCH_EVERY`]: the connection counts the bytes it reads and the requests it starts and
//! finishes, and the watchdog closes it when, with no request in flight, bytes have arrived that
//! started no request for two ticks in a row (at most [`HEADER_TIMEOUT`]). Idle keep-alive connections
//! (nothing received) are left open; a slow *body* belongs to a request in flight and is timed by
//! its handler ([`super::body::BODY_TIMEOUT`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::Response;
use ::http::Request;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::{Api, Handler};

/// How often a connection's watchdog looks at its progress.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);
/// Consecutive ticks a head may be seen arriving without starting a request.
const STALLED_TICKS: u32 = 2;
/// So a request head that has begun arriving is cut off at most this long after its first
/// bytes (and at least [`WATCH_EVERY`] after them).
pub const HEADER_TIMEOUT: Duration =
    Duration::from_secs(WATCH_EVERY.as_secs() * STALLED_TICKS as u64);

/// Serve `api` on `listener` until `shutdown` completes; then stop accepting, let every
/// open connection finish its request in flight (idle ones close at once) and return.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(error) => {
                    tollgate_envoy::grpc::accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Decisions are small request/response pairs: never wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        let progress = Arc::new(Progress::default());
        let io = TokioIo::new(Counted {
            tcp,
            progress: progress.clone(),
        });
        let service = Tracked {
            api: api.clone(),
            progress: progress.clone(),
        };
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "HTTP connection ended with an error");
                    }
                }
                // Dropping the connection closes its socket.
                () = head_stalled(&progress) => {
                    tracing::debug!("closed a connection whose request head did not arrive in time");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What one connection has done. Its socket is read only by the connection's task (a plain load
/// and store counts the bytes); requests count with `fetch_add`, since HTTP/2 runs each request
/// in a task of its own.
#[derive(Debug, Default)]
struct Progress {
    bytes_read: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    /// `bytes_read` when the last request finished: anything read after it is a new head.
    bytes_at_finish: AtomicU64,
}

/// Add to a counter only one task writes.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// Completes when a request head has been arriving, with no request in flight, for
/// [`STALLED_TICKS`] ticks.
async fn head_stalled(progress: &Progress) {
    let start = tokio::time::Instant::now() + WATCH_EVERY;
    let mut ticks = tokio::time::interval_at(start, WATCH_EVERY);
    let mut started_before = 0;
    let mut stalled_ticks = 0;
    loop {
        ticks.tick().await;
        let started = progress.started.load(Ordering::Relaxed);
        let idle = progress.finished.load(Ordering::Relaxed) == started;
        let unparsed = progress.bytes_read.load(Ordering::Relaxed)
            > progress.bytes_at_finish.load(Ordering::Relaxed);
        if idle && unparsed && started == started_before {
            stalled_ticks += 1;
            if stalled_ticks >= STALLED_TICKS {
                return;
            }
        } else {
            stalled_ticks = 0;
        }
        started_before = started;
    }
}

/// The connection's socket, counting the bytes read from it.
struct Counted {
    tcp: TcpStream,
    progress: Arc<Progress>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            bump(&self.progress.bytes_read, read as u64);
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The API, counting the connection's requests as they start and finish.
struct Tracked {
    api: Arc<Api>,
    progress: Arc<Progress>,
}

impl Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        self.progress.started.fetch_add(1, Ordering::Relaxed);
        // The handlers that answer at once (policies, metrics, errors) run here, not in a poll.
        let handler =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.api.handle(request)))
                .unwrap_or_else(|panic| super::answered(self.api.panicked(panic)));
        Answer {
            handler,
            api: self.api.clone(),
            progress: self.progress.clone(),
        }
    }
}

/// A request's response: the handler's, or a JSON 500 if it panicked (so one bad request
/// cannot take its connection, or its HTTP/2 neighbours, down with it). Marks the request
/// finished when it resolves.
struct Answer {
    handler: Handler,
    api: Arc<Api>,
    progress: Arc<Progress>,
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.handler.as_mut().poll(cx)
        }));
        let response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(response)) => response,
            // Never polled again: `Ready` is returned below.
            Err(panic) => self.api.panicked(panic),
        };
        let progress = &*self.progress;
        progress.finished.fetch_add(1, Ordering::Relaxed);
        progress.bytes_at_finish.store(
            progress.bytes_read.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::service::Service;
    use crate::store::AnyStore;

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_with_a_json_500_and_counted_finished() {
        let settings = Settings::default();
        let store = Arc::new(AnyStore::open(&settings.store).expect("memory store"));
        let api = Api::new(Arc::new(Service::new(&settings, store)));
        let progress = Arc::new(Progress::default());
        let answer = Answer {
            handler: Box::pin(async { panic!("a handler bug") }),
            api,
            progress: progress.clone(),
        };
        let Ok(response) = answer.await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(progress.finished.load(Ordering::Relaxed), 1);
    }
}
