//! [`ObjectUrl`]: where an object storage keeps a job's checkpoints, parsed
//! from `s3://bucket/prefix`, `gs://…`, `az://…`, `file:///…` or (feature
//! `hdfs`) `hdfs://namenode:port/path` and `viewfs://cluster/path`, and the
//! object store client built for it.

use std::fmt;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, RetryConfig};
use state_core::{Result, StateError};

/// The object stores an [`ObjectUrl`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectScheme {
    /// Amazon S3 or an S3-compatible server (`s3://bucket/prefix`).
    S3,
    /// Google Cloud Storage (`gs://bucket/prefix`).
    Gcs,
    /// Azure Blob Storage (`az://container/prefix`).
    Azure,
    /// A local directory through the object store interface (`file:///dir`).
    File,
    /// HDFS through the `hdfs-native` client (`hdfs://namenode:port/path`,
    /// or a name service `hdfs://ns/path`); needs the `hdfs` feature.
    Hdfs,
    /// A Hadoop ViewFS mount table (`viewfs://cluster/path`) over HDFS name
    /// services, resolved by the `hdfs-native` client; needs the `hdfs` feature.
    ViewFs,
}

impl ObjectScheme {
    /// The URL scheme (`s3`, `gs`, `az`, `file`, `hdfs`, `viewfs`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectScheme::S3 => "s3",
            ObjectScheme::Gcs => "gs",
            ObjectScheme::Azure => "az",
            ObjectScheme::File => "file",
            ObjectScheme::Hdfs => "hdfs",
            ObjectScheme::ViewFs => "viewfs",
        }
    }

    /// Whether this build can open URLs of this scheme: HDFS and ViewFS
    /// need the `hdfs` feature, the others are always there.
    pub fn is_available(self) -> bool {
        match self {
            ObjectScheme::Hdfs | ObjectScheme::ViewFs => cfg!(feature = "hdfs"),
            _ => true,
        }
    }
}

/// The error for a URL of a scheme this build was compiled without.
fn unavailable(url: &str, scheme: ObjectScheme) -> StateError {
    bad(
        url,
        format!(
            "{}:// URLs need the `hdfs` cargo feature, which this build left out: \
             build with `--features hdfs` (cairn-backend-fs, or cairn-cli and \
             cairn-benches, which pass it on)",
            scheme.as_str()
        ),
    )
}

/// A checkpoint location in an object store: scheme, bucket (container),
/// key prefix and client options, parsed by [`ObjectUrl::parse`].
///
/// Credentials and the endpoint come from the standard environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `GOOGLE_*`, `AZURE_*`); the query
/// of the URL and [`ObjectUrl::with_option`] override them: `region`,
/// `endpoint`, `path_style=true|false` (S3 path-style requests, the default
/// with an endpoint), `allow_http=true|false`, and any configuration key of
/// the object_store crate's builder for that scheme (`aws_access_key_id`, …;
/// on S3, `checksum_algorithm=crc64nvme` or `sha256` has the server verify
/// every uploaded body and part against a checksum sent with it).
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    scheme: ObjectScheme,
    bucket: String,
    prefix: Vec<String>,
    options: Vec<(String, String)>,
}

impl fmt::Debug for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Options may hold credentials: only their keys are shown.
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ObjectUrl")
            .field("url", &self.to_string())
            .field("options", &keys)
            .finish()
    }
}

impl fmt::Display for ObjectUrl {
    /// The URL without its options: `s3://bucket/prefix`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            ObjectScheme::File => write!(f, "file:///{}", self.prefix.join("/")),
            scheme => {
                write!(f, "{}://{}", scheme.as_str(), self.bucket)?;
                for part in &self.prefix {
                    write!(f, "/{part}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether `text` starts like a URL cairn's object storage reads
/// (`s3://`, `gs://`, `az://`, `file://`, `hdfs://`, `viewfs://`), so a
/// command line can route it (with or without the `hdfs` feature: without
/// it, [`ObjectUrl::parse`] says which feature to enable).
pub fn is_object_url(text: &str) -> bool {
    ["s3://", "gs://", "az://", "file://", "hdfs://", "viewfs://"]
        .iter()
        .any(|scheme| text.starts_with(scheme))
}

fn bad(url: &str, why: impl fmt::Display) -> StateError {
    StateError::invalid(format!("object store URL {url:?}: {why}"))
}

impl ObjectUrl {
    /// Parses `s3://bucket/prefix?opt=value&…` (or `gs://`, `az://`,
    /// `file:///absolute/dir`, `hdfs://namenode:port/path`,
    /// `viewfs://cluster/path`; for the last two the "bucket" is the
    /// authority, the name node's `host:port` or a name service, and the
    /// options are Hadoop configuration keys such as
    /// `dfs.ha.namenodes.<ns>`). Errors name the URL and what is wrong: an
    /// unknown scheme, a missing bucket, an empty, `.` or `..` path part, an
    /// HDFS URL in a build without the `hdfs` feature.
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad(url, "expected <scheme>://<bucket>/<prefix>"))?;
        let scheme = match scheme {
            "s3" | "s3a" => ObjectScheme::S3,
            "gs" => ObjectScheme::Gcs,
            "az" | "abfs" | "azure" => ObjectScheme::Azure,
            "file" => ObjectScheme::File,
            "hdfs" => ObjectScheme::Hdfs,
            "viewfs" => ObjectScheme::ViewFs,
            other => {
                return Err(bad(
                    url,
                    format!("unknown scheme {other:?}; expected s3, gs, az, file, hdfs or viewfs"),
                ));
            }
        };
        if !scheme.is_available() {
            return Err(unavailable(url, scheme));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            options.push((key.to_owned(), value.to_owned()));
        }
        let (bucket, prefix) = match scheme {
            ObjectScheme::File => {
                let Some(abs) = path.strip_prefix('/') else {
                    return Err(bad(url, "a file URL needs an absolute path: file:///dir"));
                };
                (String::new(), abs)
            }
            _ => match path.split_once('/') {
                Some((bucket, prefix)) => (bucket.to_owned(), prefix),
                None => (path.to_owned(), ""),
            },
        };
        if scheme != ObjectScheme::File && bucket.is_empty() {
            return Err(bad(
                url,
                match scheme {
                    ObjectScheme::Hdfs | ObjectScheme::ViewFs => {
                        "no name node (host:port) or name service"
                    }
                    _ => "no bucket (container) name",
                },
            ));
        }
        let mut parts = Vec::new();
        for part in prefix.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." || part.contains('\\') {
                return Err(bad(url, format!("path part {part:?} is not a plain name")));
            }
            parts.push(part.to_owned());
        }
        Ok(ObjectUrl {
            scheme,
            bucket,
            prefix: parts,
            options,
        })
    }

    /// The store kind.
    pub fn scheme(&self) -> ObjectScheme {
        self.scheme
    }

    /// The bucket (container) name; empty for `file://`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix's parts below the bucket.
    pub fn prefix(&self) -> &[String] {
        &self.prefix
    }

    /// This URL with one more path part (`join("job-1")`: `s3://b/p/job-1`).
    /// Fails naming the part when it is empty, `.`, `..` or holds a `/`.
    pub fn join(&self, part: &str) -> Result<Self> {
        if part.is_empty() || part == "." || part == ".." || part.contains(['/', '\\']) {
            return Err(bad(
                &self.to_string(),
                format!("cannot join {part:?}: not a plain name"),
            ));
        }
        let mut out = self.clone();
        out.prefix.push(part.to_owned());
        Ok(out)
    }

    /// This URL without its last path part, and that part (`None` at the bucket).
    pub fn split_last(&self) -> Option<(Self, &str)> {
        let (last, rest) = self.prefix.split_last()?;
        let mut parent = self.clone();
        parent.prefix = rest.to_vec();
        Some((parent, last))
    }

    /// Sets a client option (see the type's docs), replacing one of that key.
    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.options.retain(|(k, _)| *k != key);
        self.options.push((key, value.into()));
        self
    }

    /// The client options set by the URL's query or [`ObjectUrl::with_option`].
    pub fn options(&self) -> &[(String, String)] {
        &self.options
    }

    /// The object store client for this URL's bucket, retrying each request
    /// as `retry` says (HDFS: the client's own retries; its I/O runs on
    /// `runtime`). The key prefix is not part of the client.
    pub(crate) fn build_store(
        &self,
        retry: &super::RetryOptions,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<dyn ObjectStore>> {
        let url = self.to_string();
        let retry_config = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: retry.initial_backoff,
                max_backoff: retry.max_backoff,
                base: 2.0,
            },
            max_retries: retry.request_retries,
            retry_timeout: retry.request_timeout.saturating_mul(4),
        };
        // Timeouts first, so the URL's options can override them.
        let mut options = vec![
            (
                "timeout".to_owned(),
                format!("{}ms", retry.request_timeout.as_millis()),
            ),
            ("connect_timeout".to_owned(), "5s".to_owned()),
        ];
        for (key, value) in &self.options {
            match key.as_str() {
                "path_style" => options.push((
                    "virtual_hosted_style_request".to_owned(),
                    (!truthy(value)).to_string(),
                )),
                _ => options.push((key.clone(), value.clone())),
            }
        }
        let key_error =
            |key: &str, e: object_store::Error| bad(&url, format!("option {key:?}: {e}"));
        let store: Arc<dyn ObjectStore> = match self.scheme {
            ObjectScheme::S3 => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(&self.bucket);
                for (key, value) in &options {
                    let k: AmazonS3ConfigKey = key.parse().map_err(|e| key_error(key, e))?;
                    b = b.with_config(k, value);
                }
                Arc::new(
                    b.with_retry(retry_config)
                        .build()
                        .map_err(|e| bad(&url, e))?,
                )
            }
            ObjectScheme::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&self.bucket);
                for (key, value) in &options {
                    let k: GoogleConfigKey = key.parse().map_err(|e| key_error(key, e))?;
                    b = b.with_config(k, value);
                }
                Arc::new(
                    b.with_retry(retry_config)
                        .build()
                        .map_err(|e| bad(&url, e))?,
                )
            }
            ObjectScheme::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&self.bucket);
                for (key, value) in &options {
                    let k: AzureConfigKey = key.parse().map_err(|e| key_error(key, e))?;
                    b = b.with_config(k, value);
                }
                Arc::new(
                    b.with_retry(retry_config)
                        .build()
                        .map_err(|e| bad(&url, e))?,
                )
            }
            ObjectScheme::File => {
                if let Some((key, _)) = self.options.first() {
                    return Err(bad(&url, format!("file URLs take no option ({key:?})")));
                }
                // Empty directories go with their last object, as prefixes do on S3.
                Arc::new(LocalFileSystem::new().with_automatic_cleanup(true))
            }
            ObjectScheme::Hdfs | ObjectScheme::ViewFs => self.build_hdfs(runtime)?,
        };
        Ok(store)
    }
}

impl ObjectUrl {
    /// The HDFS client of `hdfs://` and `viewfs://` URLs: the URL's options
    /// are Hadoop configuration (over `core-site.xml` and `hdfs-site.xml`
    /// from `HADOOP_CONF_DIR`, which the client reads). Connects lazily: a
    /// name node that cannot be reached fails the first request.
    #[cfg(feature = "hdfs")]
    fn build_hdfs(&self, runtime: &tokio::runtime::Handle) -> Result<Arc<dyn ObjectStore>> {
        let url = self.to_string();
        let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
            .with_url(format!("{}://{}", self.scheme.as_str(), self.bucket))
            .with_config(self.options.iter().cloned())
            .with_io_runtime(runtime.clone())
            .build()
            .map_err(|e| bad(&url, e))?;
        Ok(Arc::new(store))
    }

    #[cfg(not(feature = "hdfs"))]
    fn build_hdfs(&self, _runtime: &tokio::runtime::Handle) -> Result<Arc<dyn ObjectStore>> {
        Err(unavailable(&self.to_string(), self.scheme))
    }
}

fn truthy(value: &str) -> bool {
    matches!(value, "true" | "1" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_scheme_bucket_prefix_and_options() {
        let u = ObjectUrl::parse("s3://ckpt/a/b/?region=eu-west-1&path_style").unwrap();
        assert_eq!(u.scheme(), ObjectScheme::S3);
        assert_eq!(u.bucket(), "ckpt");
        assert_eq!(u.prefix(), ["a", "b"]);
        assert_eq!(u.to_string(), "s3://ckpt/a/b");
        assert_eq!(
            u.options(),
            [
                ("region".to_owned(), "eu-west-1".to_owned()),
                ("path_style".to_owned(), "true".to_owned())
            ]
        );
        assert_eq!(u.join("job").unwrap().to_string(), "s3://ckpt/a/b/job");
        let (parent, last) = u.split_last().unwrap();
        assert_eq!((parent.to_string().as_str(), last), ("s3://ckpt/a", "b"));
        let f = ObjectUrl::parse("file:///tmp/x").unwrap();
        assert_eq!(f.to_string(), "file:///tmp/x");
        assert!(
            format!("{:?}", u.with_option("aws_secret_access_key", "hidden"))
                .contains("aws_secret_access_key")
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_the_url() {
        for (url, why) in [
            ("ftp://x/y", "unknown scheme"),
            ("s3:///prefix", "no bucket"),
            ("s3://b/a/../c", "not a plain name"),
            ("file://relative", "absolute path"),
            ("bucket/prefix", "expected"),
        ] {
            let err = ObjectUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(why), "{url}: {err}");
        }
        assert!(ObjectUrl::parse("s3://b").unwrap().join("..").is_err());
        assert!(is_object_url("gs://b") && !is_object_url("/tmp/s3://x"));
    }

    /// With the `hdfs` feature HDFS and ViewFS URLs parse; without it they
    /// are refused naming the feature (CI's `--all-features` run checks the
    /// first, a default build the second).
    #[test]
    fn hdfs_and_viewfs_urls_parse_with_the_feature_and_name_it_without() {
        for (text, scheme, authority) in [
            (
                "hdfs://namenode:8020/flink/checkpoints/",
                ObjectScheme::Hdfs,
                "namenode:8020",
            ),
            (
                "viewfs://cluster/flink/checkpoints",
                ObjectScheme::ViewFs,
                "cluster",
            ),
        ] {
            assert!(is_object_url(text), "{text}");
            let parsed = ObjectUrl::parse(text);
            if cfg!(feature = "hdfs") {
                let u = parsed.unwrap();
                assert_eq!(u.scheme(), scheme);
                assert_eq!(u.bucket(), authority);
                assert_eq!(u.prefix(), ["flink", "checkpoints"]);
                assert_eq!(
                    u.join("job").unwrap().to_string(),
                    format!("{}://{authority}/flink/checkpoints/job", scheme.as_str())
                );
            } else {
                let err = parsed.unwrap_err().to_string();
                assert!(
                    err.contains(text) && err.contains("`hdfs` cargo feature"),
                    "{err}"
                );
            }
            // The message names the feature in every build.
            let err = unavailable(text, scheme).to_string();
            assert!(
                err.contains("--features hdfs") && err.contains(text),
                "{err}"
            );
        }
        let ha =
            "hdfs://ns1/ckpt?dfs.ha.namenodes.ns1=nn1,nn2&dfs.namenode.rpc-address.ns1.nn1=a:8020";
        let parsed = ObjectUrl::parse(ha);
        assert_eq!(parsed.is_ok(), cfg!(feature = "hdfs"), "{parsed:?}");
        if let Ok(u) = parsed {
            assert_eq!(
                u.options().first(),
                Some(&("dfs.ha.namenodes.ns1".to_owned(), "nn1,nn2".to_owned()))
            );
        }
        if cfg!(feature = "hdfs") {
            let err = ObjectUrl::parse("hdfs:///ckpt").unwrap_err().to_string();
            assert!(err.contains("no name node"), "{err}");
        }
    }

    #[test]
    fn secrets_are_not_shown_by_debug() {
        let u = ObjectUrl::parse("s3://b/p")
            .unwrap()
            .with_option("aws_secret_access_key", "s3cr3t");
        assert!(!format!("{u:?}").contains("s3cr3t"));
    }
}
