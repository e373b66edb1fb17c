//! Choosing and building the data store from `--storage`.

use super::object::{Backend, Buckets, ObjectData, ObjectTuning, PartPolicy};
use super::{DataError, DataStore, FileStore};
use object_store::signer::Signer;
use object_store::{ClientConfigKey, RetryConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where uploads are stored, parsed from a storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// `file://DIR` (or a plain path).
    File(PathBuf),
    /// `s3://bucket/prefix`
    S3 { bucket: String, prefix: String },
    /// `gs://bucket/prefix`
    Gcs { bucket: String, prefix: String },
    /// `az://container/prefix`
    Azure { container: String, prefix: String },
}

impl StorageUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(StorageUrl::File(PathBuf::from(url)));
        };
        let split = |rest: &str| -> Result<(String, String), String> {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{url:?} names no bucket"));
            }
            Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
        };
        match scheme {
            "file" => Ok(StorageUrl::File(PathBuf::from(rest))),
            "s3" => split(rest).map(|(bucket, prefix)| StorageUrl::S3 { bucket, prefix }),
            "gs" => split(rest).map(|(bucket, prefix)| StorageUrl::Gcs { bucket, prefix }),
            "az" => split(rest).map(|(container, prefix)| StorageUrl::Azure { container, prefix }),
            other => Err(format!(
                "unsupported storage scheme {other:?} (file, s3, gs, az)"
            )),
        }
    }
}

/// Settings for building a data store.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// S3 endpoint (MinIO, R2, a local S3 server); otherwise AWS_ENDPOINT.
    pub s3_endpoint: Option<String>,
    /// S3 region; otherwise AWS_REGION / AWS_DEFAULT_REGION.
    pub s3_region: Option<String>,
    /// Further S3 buckets (same endpoint and credentials) a pre-create hook
    /// may place an upload in (`Storage.Bucket`).
    pub s3_allowed_buckets: Vec<String>,
    /// File storage: whole blocks with direct I/O (see `FileStore::direct_io`).
    pub file_direct_io: bool,
    /// File storage: no `RWF_DONTCACHE` (see `FileStore::uncached_writes`).
    pub file_keep_cache: bool,
    /// Timeout of one storage request (a whole part upload).
    pub request_timeout: Option<Duration>,
    /// `--s3-part-policy`; `None` chooses by store (see [`auto_part_policy`]).
    pub part_policy: Option<PartPolicy>,
    /// Object-storage tuning; its `part_policy` is set from the above.
    pub tuning: ObjectTuning,
}

/// Client settings tusker sets on top of what the builders read from the
/// environment (so AWS_PROXY_URL, *_ALLOW_INVALID_CERTIFICATES and the like
/// keep working): the request and connect timeouts, and plain HTTP when an
/// http:// endpoint was given.
fn client_settings(options: &StorageOptions, allow_http: bool) -> Vec<(ClientConfigKey, String)> {
    let timeout = options.request_timeout.unwrap_or(Duration::from_secs(300));
    let mut settings = vec![
        (
            ClientConfigKey::Timeout,
            format!("{}ms", timeout.as_millis()),
        ),
        (ClientConfigKey::ConnectTimeout, "10s".to_owned()),
    ];
    if allow_http {
        settings.push((ClientConfigKey::AllowHttp, "true".to_owned()));
    }
    settings
}

/// Retries happen in tusker (backon, per call); object_store's own retry
/// layer is off so the two never multiply.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

fn backend_err(e: object_store::Error) -> DataError {
    DataError::Backend(Box::new(e))
}

/// Builds the data store for `url`; a relative `file://` path is taken as is,
/// the default is `DATA_DIR/uploads`.
pub fn open(
    url: Option<&str>,
    data_dir: &Path,
    options: &StorageOptions,
) -> Result<Arc<dyn DataStore>, DataError> {
    let url = match url {
        Some(u) => StorageUrl::parse(u).map_err(|e| DataError::Backend(e.into()))?,
        None => StorageUrl::File(data_dir.join("uploads")),
    };
    if !options.s3_allowed_buckets.is_empty() && !matches!(url, StorageUrl::S3 { .. }) {
        return Err(DataError::Backend(
            "--s3-allowed-buckets needs s3:// storage".into(),
        ));
    }
    let mut tuning = options.tuning.clone();
    // Each store is also its own URL signer (--download-redirect).
    let (bucket, prefix, kind, stores): (String, String, &'static str, Vec<Signed>) = match url {
        StorageUrl::File(dir) => {
            let store = FileStore::open(dir)?
                .direct_io(options.file_direct_io)
                .uncached_writes(!options.file_keep_cache);
            return Ok(Arc::new(store));
        }
        StorageUrl::S3 { bucket, prefix } => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env();
            let endpoint = options.s3_endpoint.clone().or_else(|| {
                ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                    .iter()
                    .find_map(|v| std::env::var(v).ok())
            });
            if let Some(endpoint) = &options.s3_endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &options.s3_region {
                builder = builder.with_region(region);
            }
            tuning.part_policy = options
                .part_policy
                .unwrap_or_else(|| auto_part_policy(endpoint.as_deref()));
            let allow_http = endpoint.is_some_and(|e| e.starts_with("http://"));
            for (key, value) in client_settings(options, allow_http) {
                builder =
                    builder.with_config(object_store::aws::AmazonS3ConfigKey::Client(key), value);
            }
            let builder = builder.with_retry(no_retries());
            let mut stores = Vec::new();
            for name in std::iter::once(&bucket).chain(&options.s3_allowed_buckets) {
                let store = builder
                    .clone()
                    .with_bucket_name(name)
                    .build()
                    .map_err(backend_err)?;
                stores.push(Signed::new(name, store));
            }
            (bucket, prefix, "s3", stores)
        }
        StorageUrl::Gcs { bucket, prefix } => {
            tuning.part_policy = options.part_policy.unwrap_or(PartPolicy::Variable);
            let mut builder =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket);
            for (key, value) in client_settings(options, false) {
                builder =
                    builder.with_config(object_store::gcp::GoogleConfigKey::Client(key), value);
            }
            let store = builder
                .with_retry(no_retries())
                .build()
                .map_err(backend_err)?;
            let stores = vec![Signed::new(&bucket, store)];
            (bucket, prefix, "gcs", stores)
        }
        StorageUrl::Azure { container, prefix } => {
            tuning.part_policy = options.part_policy.unwrap_or(PartPolicy::Variable);
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&container);
            for (key, value) in client_settings(options, false) {
                builder =
                    builder.with_config(object_store::azure::AzureConfigKey::Client(key), value);
            }
            let store = builder
                .with_retry(no_retries())
                .build()
                .map_err(backend_err)?;
            let stores = vec![Signed::new(&container, store)];
            (container, prefix, "azure", stores)
        }
    };
    let mut stores = stores.into_iter();
    let Some(first) = stores.next() else {
        return Err(DataError::Backend("no bucket to store in".into()));
    };
    let default = ObjectData::new(first.store, &prefix, kind, tuning).with_signer(first.signer);
    let mut buckets = Buckets::new(bucket, default.clone());
    for other in stores {
        buckets = buckets.allow(other.name, default.on(other.store, Some(other.signer)));
    }
    Ok(Arc::new(buckets))
}

/// The part policy of an S3 endpoint: Cloudflare R2 refuses a multipart
/// upload whose non-last parts differ in size; S3 and the S3-compatible
/// servers tusker is tested with (MinIO, moto, s3s) accept them.
pub fn auto_part_policy(endpoint: Option<&str>) -> PartPolicy {
    let host = endpoint
        .map(|e| e.split_once("://").map_or(e, |(_, rest)| rest))
        .map(|rest| rest.split(['/', ':']).next().unwrap_or(""))
        .unwrap_or("")
        .to_ascii_lowercase();
    if host.ends_with(".r2.cloudflarestorage.com") {
        PartPolicy::Equal
    } else {
        PartPolicy::Variable
    }
}

/// One bucket's store, also as the signer of its download URLs.
struct Signed {
    name: String,
    store: Arc<dyn Backend>,
    signer: Arc<dyn Signer>,
}

impl Signed {
    fn new<T: Backend + Signer>(name: &str, store: T) -> Self {
        let store = Arc::new(store);
        Signed {
            name: name.to_owned(),
            store: store.clone(),
            signer: store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_policy_is_equal_only_on_r2() {
        assert_eq!(auto_part_policy(None), PartPolicy::Variable);
        assert_eq!(
            auto_part_policy(Some("http://127.0.0.1:9000")),
            PartPolicy::Variable
        );
        assert_eq!(
            auto_part_policy(Some("https://ACCOUNT.R2.cloudflarestorage.com/")),
            PartPolicy::Equal
        );
        assert_eq!(
            auto_part_policy(Some("https://acct.eu.r2.cloudflarestorage.com:443")),
            PartPolicy::Equal
        );
        assert_eq!(
            auto_part_policy(Some("https://r2.cloudflarestorage.com.example/")),
            PartPolicy::Variable
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            StorageUrl::parse("s3://b/videos/in/"),
            Ok(StorageUrl::S3 {
                bucket: "b".into(),
                prefix: "videos/in".into()
            })
        );
        assert_eq!(
            StorageUrl::parse("gs://b"),
            Ok(StorageUrl::Gcs {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            StorageUrl::parse("file:///srv/up"),
            Ok(StorageUrl::File("/srv/up".into()))
        );
        assert_eq!(
            StorageUrl::parse("./up"),
            Ok(StorageUrl::File("./up".into()))
        );
        assert!(StorageUrl::parse("s3://").is_err());
        assert!(StorageUrl::parse("ftp://x/y").is_err());
    }
}
