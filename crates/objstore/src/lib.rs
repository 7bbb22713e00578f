//! Where lightops reads data and artifacts from.
//!
//! A location is a local path (or `file://` URL) or an `https://`/`http://` URL. Remote files are
//! downloaded once into a cache directory (normally `LIGHTOPS_HOME/cache/downloads`), named after
//! the URL's sha256 so two URLs never collide, written to a temporary file and renamed so an
//! interrupted download never leaves a partial file behind. `s3://` data files are not read
//! through here yet (refused with a message saying so); [`artifacts`] is the artifact store
//! (local directory or S3) the services share.

pub mod artifacts;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use url::Url;

/// Errors from resolving or downloading a location.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is neither a path nor a supported URL.
    #[error("{location}: unsupported location ({reason})")]
    Unsupported {
        /// The location as given.
        location: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The download failed: offline, DNS, refused, timeout or an HTTP error status.
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Local file system trouble (cache directory, temporary file).
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file on this machine.
    Local(PathBuf),
    /// A file served over HTTP(S).
    Http(Url),
}

impl Location {
    /// Parses a path, `file://` URL or `http(s)://` URL.
    pub fn parse(text: &str) -> Result<Self> {
        let unsupported = |reason: &str| Error::Unsupported { location: text.to_owned(), reason: reason.to_owned() };
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Url::parse(text).map(Self::Http).map_err(|e| unsupported(&e.to_string())),
            "file" => {
                let url = Url::parse(text).map_err(|e| unsupported(&e.to_string()))?;
                url.to_file_path().map(Self::Local).map_err(|()| unsupported("not a local file URL"))
            }
            "s3" => Err(unsupported("s3:// locations need the object store of the registry service, not yet built")),
            other => Err(unsupported(&format!("scheme `{other}` is not one of file, http, https"))),
        }
    }
}

/// Observes a download; all methods have no-op defaults.
pub trait DownloadProgress {
    /// The download of `url` starts; `total` bytes when the server says.
    fn start(&self, _url: &str, _total: Option<u64>) {}
    /// `bytes` more bytes arrived.
    fn advance(&self, _bytes: u64) {}
    /// The download finished (successfully or not).
    fn finish(&self) {}
}

/// A [`DownloadProgress`] that does nothing.
pub struct Silent;
impl DownloadProgress for Silent {}

/// A local path for `location`: local paths as they are, URLs downloaded into `cache_dir` once.
pub fn localize(location: &str, cache_dir: &Path, progress: &dyn DownloadProgress) -> Result<PathBuf> {
    match Location::parse(location)? {
        Location::Local(path) => Ok(path),
        Location::Http(url) => download_cached(&url, cache_dir, progress),
    }
}

/// The cache file for a URL: `<sha256(url)[..16]>-<last path segment>`.
pub fn cache_path(url: &Url, cache_dir: &Path) -> PathBuf {
    let digest = hex::encode(Sha256::digest(url.as_str().as_bytes()));
    let name = url.path_segments().and_then(|mut s| s.next_back()).filter(|s| !s.is_empty()).unwrap_or("download");
    cache_dir.join(format!("{}-{name}", &digest[..16]))
}

/// Downloads `url` into the cache unless it is already there; returns the cached file.
pub fn download_cached(url: &Url, cache_dir: &Path, progress: &dyn DownloadProgress) -> Result<PathBuf> {
    let target = cache_path(url, cache_dir);
    if target.is_file() {
        tracing::debug!(url = %url, path = %target.display(), "using cached download");
        return Ok(target);
    }
    std::fs::create_dir_all(cache_dir).map_err(|source| Error::Io { path: cache_dir.to_path_buf(), source })?;
    let failed = |reason: String| Error::Download { url: url.to_string(), reason };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .build()
        .into();
    let response = agent.get(url.as_str()).call().map_err(|e| failed(describe(&e)))?;
    let total =
        response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    progress.start(url.as_str(), total);
    let partial = target.with_extension("part");
    let result = (|| {
        let mut reader = response.into_body().into_reader();
        let mut file = File::create(&partial).map_err(|source| Error::Io { path: partial.clone(), source })?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = reader.read(&mut buffer).map_err(|e| failed(format!("connection broke: {e}")))?;
            if read == 0 {
                break;
            }
            file.write_all(&buffer[..read]).map_err(|source| Error::Io { path: partial.clone(), source })?;
            progress.advance(read as u64);
        }
        file.sync_all().map_err(|source| Error::Io { path: partial.clone(), source })?;
        std::fs::rename(&partial, &target).map_err(|source| Error::Io { path: target.clone(), source })
    })();
    progress.finish();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| target)
}

fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        ureq::Error::Io(e) => format!("network error ({e}); are you offline?"),
        other => format!("{other}; are you offline?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_locations() {
        assert_eq!(Location::parse("data/a.parquet").ok(), Some(Location::Local("data/a.parquet".into())));
        assert_eq!(Location::parse("file:///tmp/a.parquet").ok(), Some(Location::Local("/tmp/a.parquet".into())));
        assert!(matches!(Location::parse("https://example.com/a.parquet"), Ok(Location::Http(_))));
        let err = Location::parse("ftp://x/y").expect_err("ftp");
        assert!(err.to_string().contains("scheme `ftp`"), "{err}");
        let err = Location::parse("s3://bucket/key").expect_err("s3");
        assert!(err.to_string().starts_with("s3://bucket/key: unsupported"), "{err}");
    }

    /// Serves `body` once per connection, `connections` times, over real HTTP on 127.0.0.1.
    fn serve(body: &'static [u8], status: &'static str, connections: usize) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.expect("accept");
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        (format!("http://{addr}/trip-data/green_tripdata_2099-01.parquet"), handle)
    }

    #[derive(Default)]
    struct Counting(std::sync::Mutex<(Option<u64>, u64, bool)>);
    impl DownloadProgress for Counting {
        fn start(&self, _url: &str, total: Option<u64>) {
            self.0.lock().expect("lock").0 = total;
        }
        fn advance(&self, bytes: u64) {
            self.0.lock().expect("lock").1 += bytes;
        }
        fn finish(&self) {
            self.0.lock().expect("lock").2 = true;
        }
    }

    #[test]
    fn downloads_once_into_the_cache() {
        let cache = tempfile::tempdir().expect("tempdir");
        let (url, server) = serve(b"PAR1 not really parquet", "200 OK", 1);
        let progress = Counting::default();
        let first = localize(&url, cache.path(), &progress).expect("download");
        assert_eq!(std::fs::read(&first).expect("read"), b"PAR1 not really parquet");
        assert!(first.file_name().is_some_and(|n| n.to_string_lossy().ends_with("-green_tripdata_2099-01.parquet")));
        assert_eq!(*progress.0.lock().expect("lock"), (Some(23), 23, true));
        server.join().expect("server");
        // The server is gone: the second call must come from the cache.
        let second = localize(&url, cache.path(), &Silent).expect("cached");
        assert_eq!(first, second);
    }

    #[test]
    fn http_errors_and_unreachable_hosts_name_the_url() {
        let cache = tempfile::tempdir().expect("tempdir");
        let (url, server) = serve(b"nope", "404 Not Found", 1);
        let err = localize(&url, cache.path(), &Silent).expect_err("404");
        assert_eq!(err.to_string(), format!("cannot download {url}: the server answered HTTP 404"));
        server.join().expect("server");
        assert_eq!(std::fs::read_dir(cache.path()).expect("dir").count(), 0, "no partial file left");

        // A port nobody listens on: connection refused, reported with the URL.
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let url = format!("http://127.0.0.1:{port}/green.parquet");
        let err = localize(&url, cache.path(), &Silent).expect_err("refused");
        assert!(err.to_string().starts_with(&format!("cannot download {url}: ")), "{err}");
    }
}
