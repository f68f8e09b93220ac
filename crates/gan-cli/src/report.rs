//! `gan-cli report RUN_DIR...`: runs side by side in one self-contained HTML page (the
//! pictures inlined as data URIs, so the file can be mailed or attached alone) and the
//! same table in Markdown beside it, its pictures linked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gan_core::RunConfig;
use serde_json::Value;

use crate::say;

/// What the report shows of one run.
struct RunView {
    dir: PathBuf,
    name: String,
    config: RunConfig,
    epochs: Vec<Value>,
    eval: Option<Value>,
    curves: Vec<(String, PathBuf)>,
    samples: Vec<(String, PathBuf)>,
}

/// The plots `gan_core::engine::plot` draws, in the order the report shows them.
const CURVES: [(&str, &str); 4] = [
    ("losses", "Losses"),
    ("accuracy", "Discriminator accuracy"),
    ("other", "Other training metrics"),
    ("eval", "Judge scores by step"),
];

fn load_run(dir: &Path) -> Result<RunView> {
    let config = RunConfig::read(dir)?;
    let epochs = std::fs::read_to_string(dir.join("epochs.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let eval = match std::fs::read_to_string(dir.join(crate::eval::EVAL_FILE)) {
        Ok(text) => Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid JSON",
                dir.join(crate::eval::EVAL_FILE).display()
            )
        })?),
        Err(_) => None,
    };
    if let Err(e) = gan_core::engine::plot::plot_run(dir) {
        eprintln!("warning: no curves for {}: {e:#}", dir.display());
    }
    let curves = CURVES
        .iter()
        .map(|(stem, title)| {
            (
                title.to_string(),
                dir.join(gan_core::engine::plot::CURVES_DIR)
                    .join(format!("{stem}.png")),
            )
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    // The latest grid of every figure (not the per-epoch copies).
    let mut samples: Vec<(String, PathBuf)> = std::fs::read_dir(dir.join("samples"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    name.ends_with(".png") && !name.contains("_epoch")
                })
                .map(|p| {
                    let stem = p
                        .file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string();
                    (stem, p)
                })
                .collect()
        })
        .unwrap_or_default();
    samples.sort();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(RunView {
        dir: dir.to_path_buf(),
        name,
        config,
        epochs,
        eval,
        curves,
        samples,
    })
}

/// One row of the comparison table: a label and a cell per run.
type Row = (String, Vec<String>);

fn num(v: Option<&Value>, digits: usize) -> String {
    v.and_then(Value::as_f64)
        .map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn pct(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or("—".into(), |x| format!("{:.2}%", 100.0 * x))
}

fn rows(runs: &[RunView]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |label: &str, f: &dyn Fn(&RunView) -> String| {
        rows.push((label.to_string(), runs.iter().map(f).collect()));
    };
    add("model", &|r| r.config.model.clone());
    add("model settings", &|r| match &r.config.model_config {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        v => compact(v),
    });
    add("epochs done / asked", &|r| {
        format!(
            "{} / {}",
            r.epochs.iter().filter(|e| e["seconds"].is_number()).count(),
            r.config.train.epochs
        )
    });
    add("batch size, k, lr, seed", &|r| {
        let t = &r.config.train;
        format!("{}, {}, {}, {}", t.batch_size, t.k, t.adam.lr, t.seed)
    });
    add("training time", &|r| {
        let s: f64 = r.epochs.iter().filter_map(|e| e["seconds"].as_f64()).sum();
        if s > 0.0 {
            format!("{:.1} min", s / 60.0)
        } else {
            "—".into()
        }
    });
    add("images/s (median epoch)", &|r| {
        let mut v: Vec<f64> = r
            .epochs
            .iter()
            .filter_map(|e| e["images_per_second"].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).map_or("—".into(), |x| format!("{x:.0}"))
    });
    add("last epoch: d_loss / g_loss", &|r| {
        r.epochs.last().map_or("—".into(), |e| {
            format!(
                "{} / {}",
                num(e["means"].get("d_loss"), 3),
                num(e["means"].get("g_loss"), 3)
            )
        })
    });
    let ev = |r: &RunView, path: &[&str]| -> Option<Value> {
        let mut v = r.eval.as_ref()?;
        for p in path {
            v = v.get(p)?;
        }
        Some(v.clone())
    };
    add("eval: step, N, seed", &|r| match &r.eval {
        Some(e) => format!("{}, {}, {}", e["step"], e["n"], e["seed"]),
        None => "not evaluated (gan-cli eval)".into(),
    });
    add("judge sha256 (test accuracy)", &|r| match &r.eval {
        Some(e) => format!(
            "{}… ({})",
            e["judge_sha256"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(12)
                .collect::<String>(),
            pct(e.get("judge_test_accuracy"))
        ),
        None => "—".into(),
    });
    add("MNIST-FID (lower is better)", &|r| {
        num(ev(r, &["fid", "value"]).as_ref(), 2)
    });
    add("FID floor: train vs test", &|r| {
        num(ev(r, &["fid_floor_train_vs_test", "value"]).as_ref(), 2)
    });
    add(
        "Inception-Score analogue (test images)",
        &|r| match ev(r, &["inception_score", "value"]) {
            Some(v) => format!(
                "{} ({})",
                num(Some(&v), 2),
                num(ev(r, &["inception_score_test", "value"]).as_ref(), 2)
            ),
            None => "—".into(),
        },
    );
    add(
        "classes covered, KL from uniform",
        &|r| match ev(r, &["coverage"]) {
            Some(c) => format!(
                "{} of 10, {}",
                c["classes_covered"],
                num(c.get("kl_from_uniform"), 3)
            ),
            None => "—".into(),
        },
    );
    add(
        "judge's class histogram",
        &|r| match ev(r, &["coverage", "histogram"]) {
            Some(Value::Array(h)) => h.iter().map(compact).collect::<Vec<_>>().join(" "),
            _ => "—".into(),
        },
    );
    add("conditional accuracy", &|r| {
        pct(ev(r, &["conditional_accuracy", "accuracy"]).as_ref())
    });
    // `infogan` in eval.json files written before the capabilities.
    add("c1 accuracy without labels (test)", &|r| {
        let code = ev(r, &["categorical_code", "c1_accuracy"]);
        pct(code.or_else(|| ev(r, &["infogan", "c1_accuracy"])).as_ref())
    });
    add("classifier accuracy (test)", &|r| {
        pct(ev(r, &["classifier_accuracy", "value"]).as_ref())
    });
    rows
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 with padding, for the data URIs that make the page self-contained.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn data_uri(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("data:image/png;base64,{}", base64(&bytes)))
}

/// `path` relative to the folder `base`, when both resolve; else `path` as it is.
fn relative(path: &Path, base: &Path) -> String {
    let (Ok(p), Ok(b)) = (path.canonicalize(), base.canonicalize()) else {
        return path.display().to_string();
    };
    let (pc, bc): (Vec<_>, Vec<_>) = (p.components().collect(), b.components().collect());
    let common = pc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..bc.len() {
        rel.push("..");
    }
    for c in &pc[common..] {
        rel.push(c);
    }
    rel.display().to_string()
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:12px 0}\
th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}\
th{background:#eee}td.label{font-weight:bold;background:#f6f6f6}\
.runs{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}\
figure{margin:0}figcaption{font-size:13px;color:#555}\
img.curve{width:520px;border:1px solid #ddd}img.grid{width:300px;image-rendering:pixelated}";

fn html(runs: &[RunView], table: &[Row]) -> Result<String> {
    let mut h = String::new();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>gan-rs report: {}</title><style>{STYLE}</style></head><body>\n\
         <h1>gan-rs runs side by side</h1>\n<p>{}. Metrics from <code>gan-cli eval</code> \
         (MNIST-FID and the Inception-Score analogue in the feature space of the judge named \
         by its SHA-256; compare runs only at the same N, seed and judge).</p>\n",
        esc(&names.join(", ")),
        esc(&runs
            .iter()
            .map(|r| r.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", "))
    )?;
    h.push_str("<h2>Config and metrics</h2>\n<table><tr><th></th>");
    for n in &names {
        write!(h, "<th>{}</th>", esc(n))?;
    }
    h.push_str("</tr>\n");
    for (label, cells) in table {
        write!(h, "<tr><td class=\"label\">{}</td>", esc(label))?;
        for c in cells {
            write!(h, "<td>{}</td>", esc(c))?;
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    for (_, title) in CURVES {
        if !runs
            .iter()
            .any(|r| r.curves.iter().any(|(t, _)| t == title))
        {
            continue;
        }
        write!(h, "<h2>{}</h2>\n<div class=\"runs\">", esc(title))?;
        for r in runs {
            if let Some((_, p)) = r.curves.iter().find(|(t, _)| t == title) {
                write!(
                    h,
                    "<figure><img class=\"curve\" alt=\"{} of {}\" src=\"{}\"><figcaption>{}</figcaption></figure>",
                    esc(title),
                    esc(&r.name),
                    data_uri(p)?,
                    esc(&r.name)
                )?;
            }
        }
        h.push_str("</div>\n");
    }
    h.push_str("<h2>Samples (latest grids)</h2>\n<div class=\"runs\">");
    for r in runs {
        for (stem, p) in &r.samples {
            write!(
                h,
                "<figure><img class=\"grid\" alt=\"{} of {}\" src=\"{}\"><figcaption>{}: {}</figcaption></figure>",
                esc(stem),
                esc(&r.name),
                data_uri(p)?,
                esc(&r.name),
                esc(stem)
            )?;
        }
    }
    h.push_str("</div>\n</body></html>\n");
    Ok(h)
}

fn markdown(runs: &[RunView], table: &[Row], base: &Path) -> Result<String> {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut m = String::from("# gan-rs runs side by side\n\n| |");
    for r in runs {
        write!(m, " {} |", cell(&r.name))?;
    }
    m.push_str("\n| --- |");
    m.push_str(&" --- |".repeat(runs.len()));
    m.push('\n');
    for (label, cells) in table {
        write!(m, "| **{}** |", cell(label))?;
        for c in cells {
            write!(m, " {} |", cell(c))?;
        }
        m.push('\n');
    }
    for (_, title) in CURVES {
        if !runs
            .iter()
            .any(|r| r.curves.iter().any(|(t, _)| t == title))
        {
            continue;
        }
        write!(m, "\n## {title}\n\n")?;
        for r in runs {
            if let Some((_, p)) = r.curves.iter().find(|(t, _)| t == title) {
                writeln!(m, "![{} of {}]({})", title, r.name, relative(p, base))?;
            }
        }
    }
    m.push_str("\n## Samples\n\n");
    for r in runs {
        for (stem, p) in &r.samples {
            writeln!(m, "![{}: {}]({})", r.name, stem, relative(p, base))?;
        }
    }
    Ok(m)
}

/// Writes the report of `runs` to `out` (HTML) and `out` with extension `.md`.
pub fn report(runs: &[PathBuf], out: &Path) -> Result<()> {
    if runs.is_empty() {
        bail!("name at least one run folder")
    }
    if out.extension().and_then(|e| e.to_str()) != Some("html") {
        bail!("--out must end in .html, got {}", out.display())
    }
    let views = runs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    let table = rows(&views);
    let md_path = out.with_extension("md");
    let base = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    gan_core::engine::checkpoint::atomic_write(out, html(&views, &table)?.as_bytes())?;
    gan_core::engine::checkpoint::atomic_write(
        &md_path,
        markdown(&views, &table, base)?.as_bytes(),
    )?;
    say!(
        "wrote {} (self-contained) and {} comparing {} runs",
        out.display(),
        md_path.display(),
        views.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        // RFC 4648, section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn html_is_escaped_and_paths_are_relative() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("runs/x/curves");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("a.png"), b"x").unwrap();
        let other = dir.path().join("docs");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(
            relative(&sub.join("a.png"), &other),
            "../runs/x/curves/a.png"
        );
    }
}
