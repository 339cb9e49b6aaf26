//! Whether an upload's body is part of its SigV4 signature.
//!
//! Uploads (single objects and multipart parts) attach [`UnsignedOverTls`] unless the user
//! asked for `s3.sign-payload=always`; every other request keeps the SDK's default. The
//! decision is made per request, from the URL it is about to be sent to.

/// Leaves an upload's body out of its SigV4 signature (`UNSIGNED-PAYLOAD`) when, and only
/// when, the request itself goes over TLS. TLS already guards every byte on the wire, and
/// hashing each body cost a first backup a tenth of cairn's CPU (docs/PERFORMANCE.md, session 7),
/// plus as much again on a server that checks it. Over plain HTTP the signed hash is the
/// only check against a body damaged in transit, so it stays, as AWS's own SDKs do; also
/// with `s3.checksum=when-supported`, since a server may accept a body whose CRC32
/// disagrees (s3s-fs does). The scheme is read from the request, not from cairn's own
/// endpoint setting, because the SDK also finds endpoints in the AWS profile.
#[derive(Debug)]
pub(super) struct UnsignedOverTls;

impl aws_sdk_s3::config::Intercept for UnsignedOverTls {
    fn name(&self) -> &'static str {
        "UnsignedOverTls"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        use aws_runtime::auth::PayloadSigningOverride;
        let tls = ctx
            .request()
            .uri()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("https:"));
        // A streaming checksum trailer sets its own override; that one stands.
        if tls && cfg.load::<PayloadSigningOverride>().is_none() {
            cfg.interceptor_state()
                .store_put(PayloadSigningOverride::unsigned_payload());
        }
        Ok(())
    }
}
