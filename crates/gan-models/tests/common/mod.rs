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
