//! The response body: the inner service's, or one the layer wrote (429, 503, ...), and what to
//! do once it has ended.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Either the wrapped service's body or a complete body written by the layer.
    ///
    /// Its error type is the inner body's, so the layer fits wherever the inner service did.
    /// A request holding leases ([`Rule`](crate::Rule) with `concurrency` policies) or with a
    /// [`charge`](crate::Rule::charge) gives its leases back and settles its cost when this body
    /// ends (its last frame, or an error) or is dropped (the client went away), whichever comes
    /// first.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
        finish: Option<Finish>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(finish) = this.project().finish.take() {
                finish.run();
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // `None` once sent.
        Full { data: Option<Bytes> },
    }
}

/// Work to run once, when the response has ended: given the trailers the body sent, if any.
pub(crate) struct Finish {
    trailers: Option<HeaderMap>,
    /// Whether `then` reads the trailers (else they are not kept).
    wants_trailers: bool,
    then: Box<dyn FnOnce(Option<HeaderMap>) + Send>,
}

impl Finish {
    pub(crate) fn new(
        wants_trailers: bool,
        then: impl FnOnce(Option<HeaderMap>) + Send + 'static,
    ) -> Finish {
        Finish {
            trailers: None,
            wants_trailers,
            then: Box::new(then),
        }
    }

    fn run(self) {
        (self.then)(self.trailers);
    }
}

impl fmt::Debug for Finish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finish").finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Inner { body },
            finish: None,
        }
    }

    /// The inner body, running `finish` once it has ended or is dropped.
    pub(crate) fn finishing(body: B, finish: Finish) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Inner { body },
            finish: Some(finish),
        }
    }

    pub(crate) fn full(data: Bytes) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Full { data: Some(data) },
            finish: None,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut body = match this.kind.project() {
            KindProj::Inner { body } => body,
            KindProj::Full { data } => {
                return Poll::Ready(data.take().map(|d| Ok(Frame::data(d))));
            }
        };
        let polled = body.as_mut().poll_frame(cx);
        let Some(finish) = this.finish.as_mut() else {
            return polled;
        };
        let ended = match &polled {
            Poll::Pending => false,
            Poll::Ready(Some(Ok(frame))) => {
                if let (true, Some(trailers)) = (finish.wants_trailers, frame.trailers_ref()) {
                    finish
                        .trailers
                        .get_or_insert_with(HeaderMap::new)
                        .extend(trailers.clone());
                }
                body.is_end_stream()
            }
            Poll::Ready(Some(Err(_)) | None) => true,
        };
        if ended {
            if let Some(finish) = this.finish.take() {
                finish.run();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
