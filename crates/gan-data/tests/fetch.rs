//! Downloads against local HTTP servers the tests start (loopback only), and imports.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use gan_data::fetch::{Action, FileSpec};
use gan_data::idx::{encode_labels, read_idx_labels};
use gan_data::{download_files, ensure_files, import_files};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const NAME: &str = "tiny-labels-idx1-ubyte";

fn spec(content: &[u8]) -> FileSpec {
    FileSpec {
        name: NAME.into(),
        sha256: gan_data::mnist::sha256_hex(content),
    }
}

/// A test server: answers at most `requests` requests with `reply(path)` (status, body),
/// then stops. Returns its base URL.
fn serve(
    requests: usize,
    reply: impl Fn(&str) -> (u16, Vec<u8>) + Send + 'static,
) -> (String, JoinHandle<usize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        while served < requests {
            let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(20)) else {
                break;
            };
            let (status, body) = reply(req.url());
            let _ = req.respond(tiny_http::Response::from_data(body).with_status_code(status));
            served += 1;
        }
        served
    });
    (url, handle)
}

/// A loopback port nothing listens on: connecting to it is refused.
fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    drop(l);
    url
}

/// Answers one request with a Content-Length of `len` but only `body`, then closes the
/// connection: a transfer cut off midway.
fn serve_truncated(body: Vec<u8>, len: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    (url, handle)
}

/// The names in `dir`, temporary files included (they start with a dot).
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn labels(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 3 % 10) as u8).collect()
}

#[test]
fn falls_back_to_the_next_mirror_and_verifies() {
    let content = encode_labels(&labels(50));
    let (missing, h1) = serve(1, |_| (404, b"no such file".to_vec()));
    let body = gz(&content);
    let (good, h2) = serve(1, move |path| {
        assert_eq!(path, format!("/{NAME}.gz"), "mirrors serve <name>.gz");
        (200, body.clone())
    });
    let dead = refused_url();
    let dir = tempfile::tempdir().unwrap();
    let report = ensure_files(dir.path(), &[&dead, &missing, &good], &[spec(&content)]).unwrap();
    assert_eq!(
        report.files,
        vec![(
            NAME.to_string(),
            Action::Downloaded(format!("{good}{NAME}.gz"))
        )]
    );
    assert!(report
        .to_string()
        .contains(&format!("downloaded from {good}")));
    assert_eq!(names_in(dir.path()), vec![format!("{NAME}.gz")]);
    let stored = dir.path().join(format!("{NAME}.gz"));
    assert_eq!(read_idx_labels(&stored).unwrap(), labels(50));
    assert_eq!((h1.join().unwrap(), h2.join().unwrap()), (1, 1));

    // Idempotent: the second time needs no server at all.
    let again = ensure_files(dir.path(), &[refused_url()], &[spec(&content)]).unwrap();
    assert_eq!(again.files[0].1, Action::AlreadyPresent);
    assert!(again.all_present());
    assert!(again.to_string().contains("already present"), "{again}");
}

#[test]
fn every_mirror_failing_lists_each_failure() {
    let content = encode_labels(&labels(5));
    let (missing, h) = serve(1, |_| (404, vec![]));
    let dead = refused_url();
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        ensure_files(dir.path(), &[&missing, &dead], &[spec(&content)]).unwrap_err()
    );
    assert!(e.contains("every mirror failed"), "{e}");
    assert!(
        e.contains(&format!("{missing}{NAME}.gz")) && e.contains("404"),
        "{e}"
    );
    assert!(e.contains(&format!("{dead}{NAME}.gz")), "{e}");
    assert!(
        names_in(dir.path()).is_empty(),
        "{:?}",
        names_in(dir.path())
    );
    h.join().unwrap();
}

#[test]
fn corrupt_download_leaves_nothing() {
    let content = encode_labels(&labels(20));
    let wrong = gz(&encode_labels(&[9; 20]));
    let (url, h) = serve(1, move |_| (200, wrong.clone()));
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        ensure_files(dir.path(), &[&url], &[spec(&content)]).unwrap_err()
    );
    let want = gan_data::mnist::sha256_hex(&content);
    assert!(e.contains("SHA-256 mismatch") && e.contains(&url), "{e}");
    assert!(e.contains(&format!("expected {want}")), "{e}");
    assert_eq!(
        names_in(dir.path()),
        Vec::<String>::new(),
        "no final, no temp file"
    );
    h.join().unwrap();
}

#[test]
fn corrupt_gzip_download_leaves_nothing() {
    let content = encode_labels(&labels(300));
    let mut bad = gz(&content);
    let n = bad.len();
    bad.truncate(n - 6); // the CRC and length trailer, cut
    let (url, h) = serve(1, move |_| (200, bad.clone()));
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        ensure_files(dir.path(), &[&url], &[spec(&content)]).unwrap_err()
    );
    assert!(e.contains("corrupt gzip"), "{e}");
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
    h.join().unwrap();
}

#[test]
fn interrupted_download_leaves_nothing() {
    let content = encode_labels(&labels(2000));
    let body = gz(&content);
    let (url, h) = serve_truncated(body[..body.len() / 2].to_vec(), body.len());
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        ensure_files(dir.path(), &[&url], &[spec(&content)]).unwrap_err()
    );
    assert!(e.contains("every mirror failed") && e.contains(&url), "{e}");
    assert!(e.contains("transfer"), "the cut is what failed: {e}");
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
    h.join().unwrap();
}

#[test]
fn a_corrupt_copy_is_replaced_and_download_files_refreshes() {
    let content = encode_labels(&labels(30));
    let dir = tempfile::tempdir().unwrap();
    // A raw copy with the wrong content: the loader would pick it before the .gz.
    std::fs::write(dir.path().join(NAME), encode_labels(&[0; 30])).unwrap();
    let body = gz(&content);
    let (url, h) = serve(2, move |_| (200, body.clone()));
    let report = ensure_files(dir.path(), &[&url], &[spec(&content)]).unwrap();
    assert!(matches!(report.files[0].1, Action::Downloaded(_)));
    assert_eq!(
        names_in(dir.path()),
        vec![format!("{NAME}.gz")],
        "the stale copy is gone"
    );
    // download_files fetches even what is present.
    let report = download_files(dir.path(), &[&url], &[spec(&content)]).unwrap();
    assert!(matches!(report.files[0].1, Action::Downloaded(_)));
    assert_eq!(h.join().unwrap(), 2);
    assert_eq!(names_in(dir.path()), vec![format!("{NAME}.gz")]);
}

#[test]
fn uncompressed_bodies_are_stored_raw() {
    let content = encode_labels(&labels(8));
    let body = content.clone();
    let (url, h) = serve(1, move |_| (200, body.clone()));
    let dir = tempfile::tempdir().unwrap();
    ensure_files(dir.path(), &[url.trim_end_matches('/')], &[spec(&content)]).unwrap();
    assert_eq!(names_in(dir.path()), vec![NAME.to_string()]);
    assert_eq!(std::fs::read(dir.path().join(NAME)).unwrap(), content);
    h.join().unwrap();
}

#[test]
fn import_keeps_compression_verifies_and_is_idempotent() {
    let a = encode_labels(&labels(10));
    let b = encode_labels(&labels(11));
    let specs = [
        FileSpec {
            name: "a-idx1-ubyte".into(),
            sha256: gan_data::mnist::sha256_hex(&a),
        },
        FileSpec {
            name: "b-idx1-ubyte".into(),
            sha256: gan_data::mnist::sha256_hex(&b),
        },
    ];
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a-idx1-ubyte"), &a).unwrap();
    std::fs::write(src.path().join("b-idx1-ubyte.gz"), gz(&b)).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dir = dst.path().join("nested/data");
    let report = import_files(src.path(), &dir, &specs).unwrap();
    assert_eq!(
        report.files[1].1,
        Action::Imported(src.path().join("b-idx1-ubyte.gz"))
    );
    assert_eq!(names_in(&dir), vec!["a-idx1-ubyte", "b-idx1-ubyte.gz"]);
    assert_eq!(
        read_idx_labels(&dir.join("b-idx1-ubyte.gz")).unwrap(),
        labels(11)
    );
    assert!(report.to_string().contains("imported from"), "{report}");

    let again = import_files(src.path(), &dir, &specs).unwrap();
    assert!(again.all_present(), "{again}");
    assert_eq!(
        again.to_string().lines().count(),
        3,
        "one line per file, then the folder"
    );
}

#[test]
fn import_refuses_non_canonical_or_missing_files() {
    let src = tempfile::tempdir().unwrap();
    // Well-formed IDX files of the right kinds, just not MNIST's.
    for f in gan_data::MNIST_FILES {
        let bytes = if f.name.contains("idx3") {
            gan_data::idx::encode_images(&gan_data::idx::IdxImages {
                n: 1,
                rows: 2,
                cols: 2,
                pixels: vec![7; 4],
            })
        } else {
            encode_labels(&[1])
        };
        std::fs::write(src.path().join(f.name), bytes).unwrap();
    }
    let dst = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        gan_data::import_mnist(src.path(), dst.path()).unwrap_err()
    );
    assert!(
        e.contains("SHA-256 mismatch") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
    assert_eq!(names_in(dst.path()), Vec::<String>::new());

    let empty = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        gan_data::import_mnist(empty.path(), dst.path()).unwrap_err()
    );
    assert!(
        e.contains("missing") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        gan_data::import_mnist(&empty.path().join("nope"), dst.path()).unwrap_err()
    );
    assert!(e.contains("no such folder"), "{e}");
}

#[test]
fn mirrors_default_to_the_public_ones() {
    // Only asserts the default when the variable is unset, not to race other tests.
    if std::env::var_os(gan_data::fetch::MIRRORS_ENV).is_none() {
        assert_eq!(gan_data::mirrors(), gan_data::MIRRORS);
    }
    assert!(gan_data::MIRRORS.len() >= 2);
    assert!(gan_data::MIRRORS
        .iter()
        .all(|m| m.starts_with("https://") && m.ends_with('/')));
}

#[test]
fn a_bad_import_names_its_source_and_the_real_cause() {
    let content = encode_labels(&labels(300));
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let source = src.path().join(format!("{NAME}.gz"));

    // A truncated copy: the gzip stream ends early.
    let whole = gz(&content);
    std::fs::write(&source, &whole[..whole.len() / 2]).unwrap();
    let e = format!(
        "{:#}",
        import_files(src.path(), dst.path(), &[spec(&content)]).unwrap_err()
    );
    assert!(e.contains(&source.display().to_string()), "{e}");
    assert!(e.contains("truncated"), "{e}");
    assert!(
        !e.contains(".part"),
        "the staging file is no user's business: {e}"
    );
    assert_eq!(names_in(dst.path()), Vec::<String>::new());

    // An images file under a labels name: a wrong magic number, not a checksum.
    let images = gan_data::idx::encode_images(&gan_data::idx::IdxImages {
        n: 2,
        rows: 2,
        cols: 2,
        pixels: vec![0; 8],
    });
    std::fs::write(&source, gz(&images)).unwrap();
    let e = format!(
        "{:#}",
        import_files(src.path(), dst.path(), &[spec(&content)]).unwrap_err()
    );
    assert!(e.contains(&source.display().to_string()), "{e}");
    assert!(e.contains("wrong magic number"), "{e}");
    assert!(!e.contains("SHA-256"), "{e}");
    assert_eq!(names_in(dst.path()), Vec::<String>::new());
}

// The UCI digits: one gzip CSV fetched to an exact path (gan-cli's `--uci-digits`).

/// A small, well-formed UCI digits CSV (`rows` rows of 64 pixels and a label).
fn uci_csv(rows: usize) -> Vec<u8> {
    let mut text = String::new();
    for r in 0..rows {
        let px: Vec<String> = (0..64).map(|j| ((r + j) % 17).to_string()).collect();
        text.push_str(&format!("{},{}\n", px.join(","), r % 10));
    }
    text.into_bytes()
}

fn uci_spec_of(content: &[u8]) -> FileSpec {
    FileSpec {
        name: gan_data::uci::UCI_DIGITS_NAME.into(),
        sha256: gan_data::mnist::sha256_hex(content),
    }
}

#[test]
fn uci_download_lands_at_the_exact_path_verified() {
    let content = uci_csv(30);
    let body = gz(&content);
    let (url, h) = serve(1, move |path| {
        assert_eq!(path, "/digits.csv.gz", "mirrors serve digits.csv.gz");
        (200, body.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    // A name of the user's choosing, in a folder not there yet.
    let dest = dir.path().join("nested/my-digits.csv.gz");
    let got = gan_data::download_file_to(&dest, &[&url], &uci_spec_of(&content)).unwrap();
    assert_eq!(got, format!("{url}digits.csv.gz"));
    assert_eq!(names_in(&dest.with_file_name("")), vec!["my-digits.csv.gz"]);
    assert_eq!(std::fs::read(&dest).unwrap(), gz(&content), "byte for byte");
    let digits = gan_data::read_uci_digits(&dest, gan_data::Verify::Skip).unwrap();
    assert_eq!(digits.len(), 30);
    assert_eq!(h.join().unwrap(), 1);
}

#[test]
fn uci_ensure_keeps_a_file_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("digits.csv.gz");
    std::fs::write(&dest, b"the user's own file").unwrap();
    // No server at all: nothing is fetched, nothing touched.
    assert_eq!(
        gan_data::ensure_uci_digits(&dest, &[refused_url()]).unwrap(),
        None
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"the user's own file");
}

#[test]
fn uci_corrupt_download_is_refused_and_leaves_nothing() {
    // Well-formed and gzip, but not scikit-learn's file: the pinned SHA-256 refuses it.
    let body = gz(&uci_csv(12));
    let (url, h) = serve(1, move |_| (200, body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("digits.csv.gz");
    let e = format!(
        "{:#}",
        gan_data::ensure_uci_digits(&dest, &[&url]).unwrap_err()
    );
    assert!(e.contains("SHA-256 mismatch"), "{e}");
    assert!(
        e.contains(gan_data::uci::UCI_DIGITS_SHA256),
        "names the pinned checksum: {e}"
    );
    assert!(e.contains(&format!("{url}digits.csv.gz")), "{e}");
    assert!(!dest.exists(), "nothing at the final path");
    assert_eq!(
        names_in(dir.path()),
        Vec::<String>::new(),
        "no temporary file either"
    );
    h.join().unwrap();
}

#[test]
fn uci_corrupt_download_keeps_a_good_file_in_place() {
    let content = uci_csv(20);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("digits.csv.gz");
    std::fs::write(&dest, gz(&content)).unwrap();
    let wrong = gz(&uci_csv(21));
    let (url, h) = serve(1, move |_| (200, wrong.clone()));
    let e = format!(
        "{:#}",
        gan_data::download_file_to(&dest, &[&url], &uci_spec_of(&content)).unwrap_err()
    );
    assert!(e.contains("SHA-256 mismatch"), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), gz(&content), "untouched");
    assert_eq!(names_in(dir.path()), vec!["digits.csv.gz"]);
    h.join().unwrap();
}

#[test]
fn uci_unreachable_mirror_falls_through_to_the_next() {
    let content = uci_csv(40);
    let dead = refused_url();
    let (missing, h1) = serve(1, |_| (404, b"no such file".to_vec()));
    let body = gz(&content);
    let (good, h2) = serve(1, move |_| (200, body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("digits.csv.gz");
    let got = gan_data::download_file_to(&dest, &[&dead, &missing, &good], &uci_spec_of(&content))
        .unwrap();
    assert_eq!(got, format!("{good}digits.csv.gz"));
    assert_eq!(std::fs::read(&dest).unwrap(), gz(&content));
    assert_eq!(names_in(dir.path()), vec!["digits.csv.gz"]);
    assert_eq!((h1.join().unwrap(), h2.join().unwrap()), (1, 1));

    // Every mirror down: a clear error naming each, and nothing at the path.
    let dest2 = dir.path().join("other.csv.gz");
    let e = format!(
        "{:#}",
        gan_data::ensure_uci_digits(&dest2, &[refused_url(), refused_url()]).unwrap_err()
    );
    assert!(
        e.contains("every mirror failed") && e.contains(&dest2.display().to_string()),
        "{e}"
    );
    assert!(!dest2.exists());
}

#[test]
fn uci_import_verifies_against_the_pinned_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("not-sklearn.csv");
    std::fs::write(&src, uci_csv(5)).unwrap();
    let dest = dir.path().join("data/digits.csv.gz");
    let e = format!(
        "{:#}",
        gan_data::import_uci_digits(&src, &dest).unwrap_err()
    );
    assert!(
        e.contains("SHA-256 mismatch") && e.contains(&src.display().to_string()),
        "{e}"
    );
    assert!(!dest.exists());
    assert_eq!(names_in(&dir.path().join("data")), Vec::<String>::new());
}

#[test]
fn uci_mirrors_are_sklearns_file() {
    if std::env::var_os(gan_data::uci::UCI_MIRRORS_ENV).is_none() {
        assert_eq!(gan_data::uci_mirrors(), gan_data::UCI_MIRRORS);
    }
    assert!(gan_data::UCI_MIRRORS[0]
        .starts_with("https://raw.githubusercontent.com/scikit-learn/scikit-learn/main/"));
    assert!(gan_data::UCI_MIRRORS
        .iter()
        .all(|m| m.starts_with("https://") && m.ends_with("/sklearn/datasets/data/")));
}

/// The real file, when the shared data is there: it verifies against the pinned
/// SHA-256 and imports (the checksum is scikit-learn's, see `UCI_DIGITS_SHA256`).
#[test]
fn uci_real_file_imports_when_shared_data_is_present() {
    let real =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/uci-digits/digits.csv.gz");
    if !real.is_file() {
        eprintln!("skipped: no {}", real.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("digits.csv.gz");
    gan_data::import_uci_digits(&real, &dest).unwrap();
    let bytes = std::fs::read(&dest).unwrap();
    assert_eq!(
        gan_data::mnist::sha256_hex(&bytes),
        gan_data::uci::UCI_DIGITS_GZ_SHA256
    );
    let digits = gan_data::read_uci_digits(&dest, gan_data::Verify::Canonical).unwrap();
    assert_eq!(digits.len(), 1797);
}
