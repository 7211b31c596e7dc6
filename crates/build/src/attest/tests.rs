use super::*;

#[test]
fn provenance_shorthands_parse_as_buildx() {
    let mut a = AttestRequest::default();
    assert_eq!(a.provenance, Provenance::Default);
    a.parse_provenance("true").unwrap();
    assert_eq!(a.provenance, Provenance::On(ProvenanceOpts::default()));
    a.parse_provenance("false").unwrap();
    assert_eq!(a.provenance, Provenance::Off);
    a.parse_provenance("max").unwrap();
    let Provenance::On(p) = &a.provenance else { panic!() };
    assert_eq!(p.mode, ProvenanceMode::Max);
    a.parse_provenance("mode=min,version=v1,builder-id=https://ci.example/b")
        .unwrap();
    let Provenance::On(p) = &a.provenance else { panic!() };
    assert_eq!((p.mode, p.version), (ProvenanceMode::Min, SlsaVersion::V1));
    assert_eq!(p.builder_id.as_deref(), Some("https://ci.example/b"));
    a.parse_attest("type=provenance,disabled=true").unwrap();
    assert_eq!(a.provenance, Provenance::Off);
    assert!(a
        .parse_provenance("mode=mid")
        .unwrap_err()
        .to_string()
        .contains("mode `mid`"));
}

#[test]
fn sbom_and_attest_forms() {
    let mut a = AttestRequest::default();
    a.parse_sbom("true").unwrap();
    assert_eq!(a.sbom, Some(SbomOpts::default()));
    a.parse_sbom("false").unwrap();
    assert_eq!(a.sbom, None);
    a.parse_attest("type=sbom,scan-context=true").unwrap();
    assert!(a.sbom.as_ref().unwrap().scan_context);
    a.parse_attest("type=sbom,scan-stage=true").unwrap();
    assert!(a.sbom.as_ref().unwrap().scan_stage);
    assert!(a.parse_attest("type=sbom,generator=x").is_err());
    assert!(a.parse_attest("type=frob").is_err());
    assert!(a.parse_attest("mode=max").is_err());
    assert!(no_default_attestations(Some("1")).unwrap());
    assert!(!no_default_attestations(None).unwrap());
    assert!(no_default_attestations(Some("perhaps")).is_err());
}
