use super::*;
use proptest::prelude::*;

const KEEP: PathPolicy = PathPolicy {
    merge_slashes: false,
    encoded_slash: EncodedSlash::Keep,
};

fn norm(path: &str, policy: &PathPolicy) -> Result<String, BadPath> {
    normalize_path_str(path, policy).map(Cow::into_owned)
}

fn keep(path: &str) -> String {
    norm(path, &KEEP).expect("valid path")
}

#[test]
fn rfc3986_dot_segment_examples() {
    // RFC 3986 §5.2.4's own examples, and §5.4's abnormal ones on an absolute path.
    assert_eq!(keep("/a/b/c/./../../g"), "/a/g");
    assert_eq!(keep("mid/content=5/../6"), "mid/6");
    for (input, want) in [
        ("/x/../login", "/login"),
        ("/./login", "/login"),
        ("/login/.", "/login/"),
        ("/login/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/./b/./", "/a/b/"),
        ("/.", "/"),
        ("/..", "/"),
        ("/", "/"),
        ("", ""),
        ("*", "*"),
        ("/a/.b/..c/...", "/a/.b/..c/..."),
    ] {
        assert_eq!(keep(input), want, "{input:?}");
    }
}

#[test]
fn above_the_root_is_clamped() {
    assert_eq!(keep("/../x"), "/x");
    assert_eq!(keep("/../../../etc/passwd"), "/etc/passwd");
    assert_eq!(keep("/a/../../b"), "/b");
}

#[test]
fn unreserved_escapes_are_decoded_and_others_upper_cased() {
    assert_eq!(keep("/%6Cogin"), "/login");
    assert_eq!(keep("/%7e%2D%2e%5F%41%7A%30"), "/~-._Az0");
    assert_eq!(keep("/a%20b%3f%3F"), "/a%20b%3F%3F");
    // %25 is '%' itself: kept, so nothing is decoded twice.
    assert_eq!(keep("/%252e%252E"), "/%252e%252E");
    assert_eq!(keep("/%c3%a9"), "/%C3%A9");
    // Encoded dots are dot segments once decoded.
    assert_eq!(keep("/x/%2e%2E/login"), "/login");
    assert_eq!(keep("/x/.%2e/login"), "/login");
}

#[test]
fn bad_escapes_are_refused() {
    for bad in ["/%", "/%4", "/%zz", "/a%g1", "/%%41", "/%4%41"] {
        assert_eq!(norm(bad, &KEEP), Err(BadPath::BadEscape), "{bad:?}");
    }
}

#[test]
fn encoded_slash_policies() {
    let decode = PathPolicy {
        encoded_slash: EncodedSlash::Decode,
        ..KEEP
    };
    let reject = PathPolicy {
        encoded_slash: EncodedSlash::Reject,
        ..KEEP
    };
    // Kept: a character of its segment, so `..%2F` is no dot segment.
    assert_eq!(keep("/a%2fb"), "/a%2Fb");
    assert_eq!(keep("/a/..%2F..%2Fb"), "/a/..%2F..%2Fb");
    assert_eq!(keep("/a/%2F../b"), "/a/%2F../b");
    // Decoded: a separator like any other.
    assert_eq!(norm("/a%2fb", &decode), Ok("/a/b".into()));
    assert_eq!(norm("/a/b%2F..%2Fc", &decode), Ok("/a/c".into()));
    assert_eq!(norm("/a%2F%2Fb", &decode), Ok("/a//b".into()));
    // A decoded slash that makes a dot segment with parameters is as ambiguous as a
    // written one (found by the idempotence property: `%2f.;` once became `/.;`).
    assert_eq!(norm("%2f.;", &decode), Err(BadPath::Ambiguous));
    assert_eq!(norm("/a%2F..;/b", &decode), Err(BadPath::Ambiguous));
    // Refused.
    assert_eq!(norm("/a%2fb", &reject), Err(BadPath::EncodedSlash));
    assert_eq!(norm("/a/b", &reject), Ok("/a/b".into()));
    assert_eq!(EncodedSlash::parse("decode"), Some(EncodedSlash::Decode));
    assert_eq!(EncodedSlash::parse("Decode"), None);
}

#[test]
fn duplicate_slashes_are_kept_or_merged() {
    let merge = PathPolicy {
        merge_slashes: true,
        ..KEEP
    };
    assert_eq!(keep("//a///b//"), "//a///b//");
    assert_eq!(norm("//a///b//", &merge), Ok("/a/b/".into()));
    // Merged before dot segments, as nginx does: `..` removes `a`, not an empty segment.
    assert_eq!(norm("/a//../b", &merge), Ok("/b".into()));
    assert_eq!(keep("/a//../b"), "/a/b");
}

#[test]
fn a_normal_path_is_borrowed() {
    for p in ["/", "/login", "/a/b.c/d..e/", "/api/v1?x=1"] {
        assert!(
            matches!(normalize_path_str(p, &KEEP), Ok(Cow::Borrowed(_))),
            "{p:?}"
        );
    }
    assert!(matches!(
        normalize_path_str("/a//b", &KEEP),
        Ok(Cow::Borrowed(_))
    ));
}

fn policies() -> impl Strategy<Value = PathPolicy> {
    (
        any::<bool>(),
        prop_oneof![
            Just(EncodedSlash::Keep),
            Just(EncodedSlash::Decode),
            Just(EncodedSlash::Reject)
        ],
    )
        .prop_map(|(merge_slashes, encoded_slash)| PathPolicy {
            merge_slashes,
            encoded_slash,
        })
}

/// Paths made of the pieces that matter, so the interesting cases are common.
fn path_pieces() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"/".to_vec()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"%2e".to_vec()),
        Just(b"%2E".to_vec()),
        Just(b"%2f".to_vec()),
        Just(b"%25".to_vec()),
        Just(b"%41".to_vec()),
        Just(b"%".to_vec()),
        Just(b"a".to_vec()),
        Just(b"~".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn has_dot_segment(p: &[u8]) -> bool {
    p.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn normalising_is_idempotent_and_leaves_no_dot_segments(
        path in prop_oneof![path_pieces(), proptest::collection::vec(any::<u8>(), 0..64)],
        policy in policies(),
    ) {
        // Never panics, whatever the bytes.
        if let Ok(once) = normalize_path(&path, &policy) {
            prop_assert!(!has_dot_segment(&once), "{:?} -> {:?}", path, once);
            let twice = normalize_path(&once, &policy);
            prop_assert_eq!(twice.as_deref(), Ok(&*once));
            prop_assert!(matches!(twice, Ok(Cow::Borrowed(_))), "a fixed point is borrowed");
            prop_assert!(once.len() <= path.len());
            if path.starts_with(b"/") {
                prop_assert!(once.starts_with(b"/"), "{:?} -> {:?}", path, once);
            }
            if policy.merge_slashes {
                prop_assert!(!once.windows(2).any(|w| w == b"//"));
            }
        }
    }

    #[test]
    fn text_paths_stay_text(path in "[/a-z.%0-9A-F]{0,40}", policy in policies()) {
        let _ = normalize_path_str(&path, &policy);
    }
}

#[test]
fn paths_backends_resolve_differently_are_refused() {
    let p = PathPolicy::default();
    for bad in [
        "/x\\..\\login",
        "/a\\b",
        "/x/..;/login",
        "/x/.;/login",
        "/x/..;jsessionid=1/login",
        "/x/%2e%2e;/login",
        "/x/%2E.;x/login",
    ] {
        assert_eq!(norm(bad, &p), Err(BadPath::Ambiguous), "{bad}");
    }
    // Parameters on ordinary segments are an application's business.
    assert_eq!(
        norm("/login;jsessionid=1", &p).as_deref(),
        Ok("/login;jsessionid=1")
    );
    assert_eq!(norm("/a/b;v=1/../c", &p).as_deref(), Ok("/a/c"));
    // An encoded backslash stays encoded (a character, not a separator).
    assert_eq!(norm("/a%5cb", &p).as_deref(), Ok("/a%5Cb"));
}
