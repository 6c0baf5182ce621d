//! A throwaway certificate authority for TLS tests: a CA, server certificates for `localhost`
//! and `127.0.0.1`, and client certificates, written as PEM files into a directory.

use std::path::{Path, PathBuf};

pub use rcgen::DnType;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA whose certificate is at [`TestCa::ca_pem`].
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub ca_pem: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    /// The certificate chain (leaf only).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_pem = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        TestCa { issuer: Issuer::new(params, key), ca_pem, dir: dir.to_owned() }
    }

    /// A server certificate for `localhost` and `127.0.0.1` with common name `cn`, written as
    /// `<file>.crt` and `<file>.key`.
    pub fn server(&self, cn: &str, file: &str) -> Issued {
        self.issue(cn, file, vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A server certificate like [`TestCa::server`] that expired in 2021.
    pub fn expired_server(&self, cn: &str, file: &str) -> Issued {
        let names = vec!["localhost".into(), "127.0.0.1".into()];
        self.issue_with(&[(DnType::CommonName, cn)], file, names, ExtendedKeyUsagePurpose::ServerAuth, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    /// A server certificate like [`TestCa::server`] valid only from `after` from now (as an
    /// issuer whose clock runs ahead issues them).
    pub fn future_server(&self, cn: &str, file: &str, after: std::time::Duration) -> Issued {
        let names = vec!["localhost".into(), "127.0.0.1".into()];
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        self.issue_with(&[(DnType::CommonName, cn)], file, names, ExtendedKeyUsagePurpose::ServerAuth, |params| {
            params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now + after;
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        })
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str, file: &str) -> Issued {
        self.issue(cn, file, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose subject is `subject`, attribute by attribute, in order.
    pub fn client_with_subject(&self, subject: &[(DnType, &str)], file: &str) -> Issued {
        self.issue_to(subject, file, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, cn: &str, file: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Issued {
        self.issue_to(&[(DnType::CommonName, cn)], file, names, usage)
    }

    fn issue_to(
        &self,
        subject: &[(DnType, &str)],
        file: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        self.issue_with(subject, file, names, usage, |_| {})
    }

    fn issue_with(
        &self,
        subject: &[(DnType, &str)],
        file: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let issued = Issued { cert: self.dir.join(format!("{file}.crt")), key: self.dir.join(format!("{file}.key")) };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}
