//! Test support: the real proxy on port 0, in process or as the binary; a fake Vertex that
//! records what it received and can be told how to answer; and a fake metadata server.

mod client;
mod cloud_run;
mod fake_vertex;
mod metadata;
mod proxy;

pub use client::*;
pub use cloud_run::*;
pub use fake_vertex::*;
pub use metadata::*;
pub use proxy::*;

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;

pub const KEY: &str = "sk_test_0123456789abcdef";
pub const KEY_FLASH_ONLY: &str = "sk_test_flash_only_0000";
pub const KEY_DISABLED: &str = "sk_test_disabled_000000";
pub const KEY_HASHED: &str = "sk_test_hashed_key_00000";
pub const GOOGLE_TOKEN: &str = "ya29.fake-google-token";
pub const PROJECT: &str = "test-proj";

/// Every await in a test goes through this: a hang is a failure, not a stuck CI run.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits, within the tests' bound, until `check` has a value; `changed` is told whenever what
/// it looks at may have changed. The waiter is registered before each look, so a change
/// between the look and the wait is not missed.
pub async fn until<T>(what: &str, changed: &Notify, check: impl Fn() -> Option<T>) -> T {
    within(what, async {
        loop {
            let notified = changed.notified();
            if let Some(value) = check() {
                return value;
            }
            notified.await;
        }
    })
    .await
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(vertex_proxy::keys::sha256(text.as_bytes()))
}

/// The standard key list: a plain key, one limited to `flash`, a disabled one, a hashed one.
pub fn keys_json() -> String {
    format!(
        r#"[{{"id":"main","key":"{KEY}"}},
            {{"id":"flash-only","key":"{KEY_FLASH_ONLY}","models":["flash"]}},
            {{"id":"off","key":"{KEY_DISABLED}","enabled":false}},
            {{"id":"hashed","key_sha256":"{}"}}]"#,
        sha256_hex(KEY_HASHED)
    )
}
