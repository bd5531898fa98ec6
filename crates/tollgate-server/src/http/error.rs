//! API errors: every failure is `{"error":{"code":"...","message":"..."}}` with a 4xx status.

use super::{Body, Response};
use ::http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tollgate::LimitError;

use crate::metrics::ErrorCode;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code (`invalid_request`, `unknown_policy`, ...).
    pub code: ErrorCode,
    /// A sentence for humans.
    pub message: String,
}

impl ApiError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::UnknownPolicy | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON response.
    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = serde_json::to_vec(&Envelope {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
            },
        })
        .unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, super::JSON.clone());
        match self.code {
            ErrorCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The rest of an oversized or late body may still be on its way (see
            // `body::drain`): close rather than parse it as the next request.
            ErrorCode::BodyTooLarge | ErrorCode::RequestTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<LimitError> for ApiError {
    fn from(error: LimitError) -> ApiError {
        let code = match &error {
            LimitError::UnknownPolicy(_) => ErrorCode::UnknownPolicy,
            LimitError::Store(_) => ErrorCode::StoreUnavailable,
            LimitError::DuplicatePolicy(_)
            | LimitError::NoPolicy
            | LimitError::InvalidKey(_)
            | LimitError::InvalidLease(_)
            | LimitError::Policy { .. } => ErrorCode::InvalidRequest,
        };
        ApiError::new(code, error.to_string())
    }
}
