//! The principal of a connection that presented a verified client certificate.

use x509_parser::extensions::GeneralName;

use crate::tls::PrincipalFrom;

/// The principal named by a client certificate (DER): its subject common name, or its first
/// subject alternative name (DNS name, else e-mail, else URI). `None` when the certificate
/// does not parse or has no such name.
pub fn principal_from_certificate(der: &[u8], from: PrincipalFrom) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match from {
        PrincipalFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        PrincipalFrom::San => {
            let san = cert.subject_alternative_name().ok()??;
            let names = &san.value.general_names;
            let pick = |want: fn(&GeneralName<'_>) -> Option<String>| names.iter().find_map(want);
            pick(|n| match n {
                GeneralName::DNSName(s) => Some((*s).to_owned()),
                _ => None,
            })
            .or_else(|| {
                pick(|n| match n {
                    GeneralName::RFC822Name(s) => Some((*s).to_owned()),
                    _ => None,
                })
            })
            .or_else(|| {
                pick(|n| match n {
                    GeneralName::URI(s) => Some((*s).to_owned()),
                    _ => None,
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_and_san_are_read() {
        let mut params = rcgen::CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der();
        assert_eq!(
            principal_from_certificate(der, PrincipalFrom::Cn).as_deref(),
            Some("alice")
        );
        assert_eq!(
            principal_from_certificate(der, PrincipalFrom::San).as_deref(),
            Some("svc.example")
        );
        assert_eq!(principal_from_certificate(b"junk", PrincipalFrom::Cn), None);
    }
}
