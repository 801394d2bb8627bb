//! What a careful client checks of every X.509 context it receives, beyond
//! the `spiffe` crate's own parsing (leaf profile, SPIFFE ID): the chain
//! verifies to the trust domain's bundle, the private key is the leaf's, and
//! every certificate is valid now.

use spiffe::{TrustDomain, X509Context};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Checks every SVID of `ctx` (`want` of them): the earliest notAfter (Unix
/// seconds) of its certificates, or what is wrong.
pub fn validate(ctx: &X509Context, want: usize, now: i64) -> Result<i64, String> {
    if ctx.svids().len() != want {
        return Err(format!("{} SVIDs, want {want}", ctx.svids().len()));
    }
    let mut earliest = i64::MAX;
    for svid in ctx.svids() {
        let id = svid.spiffe_id().to_string();
        let td: &TrustDomain = svid.spiffe_id().trust_domain();
        let bundle = ctx
            .bundle_set()
            .get(td)
            .ok_or_else(|| format!("{id}: no bundle for {td}"))?;
        let chain: Vec<X509Certificate<'_>> = svid
            .cert_chain()
            .iter()
            .map(|c| X509Certificate::from_der(c.as_bytes()).map(|(_, c)| c))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{id}: certificate: {e}"))?;
        let roots: Vec<X509Certificate<'_>> = bundle
            .authorities()
            .iter()
            .filter_map(|c| X509Certificate::from_der(c.as_bytes()).ok().map(|(_, c)| c))
            .collect();
        for (i, cert) in chain.iter().enumerate() {
            let validity = cert.validity();
            let (nb, na) = (
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            );
            if now < nb || now >= na {
                return Err(format!(
                    "{id}: certificate {i} is valid {nb}..{na}, now is {now}"
                ));
            }
            earliest = earliest.min(na);
            let signed = match chain.get(i + 1) {
                Some(issuer) => cert.verify_signature(Some(issuer.public_key())).is_ok(),
                None => roots
                    .iter()
                    .any(|r| cert.verify_signature(Some(r.public_key())).is_ok()),
            };
            if !signed {
                return Err(format!(
                    "{id}: certificate {i} does not verify to the bundle"
                ));
            }
        }
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            svid.private_key().as_ref(),
        )
        .map_err(|e| format!("{id}: private key: {e}"))?;
        let leaf_key = &chain[0].public_key().subject_public_key.data;
        use aws_lc_rs::signature::KeyPair as _;
        if key.public_key().as_ref() != leaf_key.as_ref() {
            return Err(format!("{id}: the private key is not the leaf's"));
        }
    }
    Ok(earliest)
}
