//! Helpers shared by gan-models' test binaries.
#![allow(dead_code)]

/// Every variable of every network and buffer of `model`, by name: what two runs must
/// agree on bit for bit.
pub fn weights(model: &dyn gan_core::Model) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (net, vars) in model.networks().into_iter().chain(model.buffers()) {
        let mut named: Vec<_> = gan_core::engine::checkpoint::var_tensors(vars)
            .into_iter()
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, t) in named {
            out.push((
                format!("{net}.{k}"),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ));
        }
    }
    out
}

/// A model's registry defaults, shrunk where they ask for more data than a test's few
/// dozen images: Triple-GAN's own batch sizes (100 unlabelled, 400 pseudo-real, 100
/// labelled) and its 3,600 pre-training steps (one here, so two steps reach the game).
pub fn test_config(e: &gan_models::Entry) -> serde_json::Value {
    let mut config = (e.default_config)();
    if e.kind == "triplegan" {
        let small = serde_json::json!({
            "labels": 10, "batch_u": 8, "batch_g": 20, "batch_pseudo": 8, "pretrain_steps": 1
        });
        for (k, v) in small.as_object().unwrap() {
            config[k] = v.clone();
        }
    }
    config
}
