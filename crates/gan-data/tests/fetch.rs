//! Downloads against a local HTTP server the test starts (loopback only), and imports.

use std::io::Write;
use std::path::Path;
use std::thread::JoinHandle;

use gan_data::fetch::{Action, FileSpec};
use gan_data::idx::encode_labels;
use gan_data::{download_files, import_mnist};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// What the test server does with a request.
#[derive(Clone)]
enum Reply {
    NotFound,
    Body(Vec<u8>),
}

/// Serves `requests` requests with `reply`, then stops. Returns its base URL.
fn serve(reply: Reply, requests: usize) -> (String, JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_secs(20)) else {
                return;
            };
            match &reply {
                Reply::NotFound => req.respond(tiny_http::Response::empty(404)).unwrap(),
                Reply::Body(b) => req
                    .respond(tiny_http::Response::from_data(b.clone()))
                    .unwrap(),
            }
        }
    });
    (url, handle)
}

/// Answers one request with a Content-Length of `len` but only `body`, then closes the
/// connection: a transfer cut off midway.
fn serve_truncated(body: Vec<u8>, len: usize) -> (String, JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match std::io::Read::read(&mut stream, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    (url, handle)
}

fn spec(content: &[u8]) -> FileSpec {
    FileSpec {
        name: "tiny-labels-idx1-ubyte".into(),
        sha256: gan_data::mnist::sha256_hex(content),
    }
}

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

#[test]
fn falls_back_to_second_mirror_and_verifies() {
    let content = encode_labels(&[1, 2, 3, 4]);
    let (bad, h1) = serve(Reply::NotFound, 1);
    let (good, h2) = serve(Reply::Body(gz(&content)), 1);
    let dir = tempfile::tempdir().unwrap();
    let report = download_files(dir.path(), &[&bad, &good], &[spec(&content)]).unwrap();
    assert_eq!(
        report.files[0].1,
        Action::Downloaded(format!("{good}tiny-labels-idx1-ubyte.gz"))
    );
    assert_eq!(names_in(dir.path()), vec!["tiny-labels-idx1-ubyte.gz"]);
    assert_eq!(
        gan_data::idx::read_idx_labels(&dir.path().join("tiny-labels-idx1-ubyte.gz")).unwrap(),
        vec![1, 2, 3, 4]
    );
    h1.join().unwrap();
    h2.join().unwrap();
    // Idempotent: no server needed the second time.
    let again = download_files(dir.path(), &["http://127.0.0.1:9/"], &[spec(&content)]).unwrap();
    assert_eq!(again.files[0].1, Action::AlreadyPresent);
    assert!(again.to_string().contains("already present"));
}

#[test]
fn corrupt_download_leaves_nothing() {
    let content = encode_labels(&[1, 2, 3, 4]);
    let (url, h) = serve(Reply::Body(gz(&encode_labels(&[9, 9, 9, 9]))), 1);
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        download_files(dir.path(), &[&url], &[spec(&content)]).unwrap_err()
    );
    assert!(
        err.contains("SHA-256 mismatch") && err.contains(&url),
        "{err}"
    );
    assert!(
        names_in(dir.path()).is_empty(),
        "left {:?}",
        names_in(dir.path())
    );
    h.join().unwrap();
}

#[test]
fn interrupted_download_leaves_nothing() {
    let content = encode_labels(&(0..200).map(|i| (i % 10) as u8).collect::<Vec<_>>());
    let body = gz(&content);
    let (url, h) = serve_truncated(body[..body.len() / 2].to_vec(), body.len());
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        download_files(dir.path(), &[&url], &[spec(&content)]).unwrap_err()
    );
    assert!(err.contains("every mirror failed"), "{err}");
    assert!(
        names_in(dir.path()).is_empty(),
        "left {:?}",
        names_in(dir.path())
    );
    h.join().unwrap();
}

#[test]
fn import_refuses_non_canonical_files() {
    let src = tempfile::tempdir().unwrap();
    for f in gan_data::MNIST_FILES {
        std::fs::write(src.path().join(f.name), encode_labels(&[1])).unwrap();
    }
    let dst = tempfile::tempdir().unwrap();
    let err = format!("{:#}", import_mnist(src.path(), dst.path()).unwrap_err());
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("train-images-idx3-ubyte"),
        "{err}"
    );
    assert!(names_in(dst.path()).is_empty());
    let empty = tempfile::tempdir().unwrap();
    assert!(
        format!("{:#}", import_mnist(empty.path(), dst.path()).unwrap_err()).contains("missing")
    );
}
