//! A private PKI for HTTPS upstreams: a CA and a leaf certificate it signs.
//!
//! The CA's PEM is written to a temp file (what `--upstream-ca-file` takes); the leaf and
//! its key make a rustls `ServerConfig` for the emulator, speaking HTTP/1.1 over ALPN.

use super::TempFile;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

pub struct TestPki {
    /// The CA certificate, PEM, in a temp file removed on drop.
    pub ca_file: TempFile,
    /// Serves the leaf certificate (and the chain up to the CA).
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestPki {
    /// A fresh CA and a leaf for `names` (DNS names), signed by that CA.
    pub fn for_names(names: &[&str]) -> TestPki {
        let ca_key = KeyPair::generate().unwrap_or_else(|error| panic!("CA key: {error}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|error| panic!("CA params: {error}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "linepay-sidecar test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|error| panic!("CA certificate: {error}"));

        let leaf_key = KeyPair::generate().unwrap_or_else(|error| panic!("leaf key: {error}"));
        let mut leaf_params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|error| panic!("leaf params: {error}"));
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .unwrap_or_else(|error| panic!("leaf certificate: {error}"));

        let ca_file = TempFile::with_contents("ca.pem", ca_cert.pem().as_bytes());
        let chain: Vec<CertificateDer<'static>> =
            vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|error| panic!("TLS versions: {error}"))
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|error| panic!("server certificate: {error}"));
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestPki {
            ca_file,
            server_config: Arc::new(server_config),
        }
    }
}
