//! DDPMScheduler against values recorded from diffusers
//! (tests/fixtures/sched/schedules.json, written by tools/fixtures/make_fixtures.py).

mod common;
use petal::diffusion::DdpmScheduler;
use petal::model::SchedulerConfig;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn schedules_timesteps_and_steps_match_diffusers() {
    let text = std::fs::read_to_string(common::repo().join("tests/fixtures/sched/schedules.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let inputs = &d["step_inputs"];
    let (sample, out, noise) = (floats(&inputs["sample"]), floats(&inputs["model_output"]), floats(&inputs["noise"]));
    let mut checked = 0;
    for c in d["configs"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let cfg: SchedulerConfig = serde_json::from_value(c["scheduler_config"].clone()).unwrap();
        let mut s = DdpmScheduler::new(&cfg).unwrap();
        // The schedule itself, bit for bit.
        let want = floats(&d["alphas_cumprod"][c["alphas_cumprod"].as_str().unwrap()]);
        let ulps = s.alphas_cumprod.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(ulps, 0, "{name}: {ulps} alphas_cumprod values differ from torch");
        for (steps, ts) in c["timesteps"].as_object().unwrap() {
            let n: u32 = steps.parse().unwrap();
            let want: Vec<i64> = ts.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            if want.iter().any(|&t| t >= cfg.num_train_timesteps as i64) {
                // diffusers returns a timestep past the schedule (its step()
                // would fail); Petal refuses up front.
                assert!(s.set_timesteps(n).is_err(), "{name}/{n}: out-of-range timesteps accepted");
                continue;
            }
            s.set_timesteps(n).unwrap();
            let got: Vec<i64> = s.timesteps.iter().map(|&t| t as i64).collect();
            assert_eq!(got, want, "{name}: timesteps for {n} steps");
        }
        for st in c["steps"].as_array().unwrap() {
            let n = st["num_inference_steps"].as_u64().unwrap() as u32;
            s.set_timesteps(n).unwrap();
            let t = st["t"].as_u64().unwrap() as u32;
            assert_eq!(s.previous_timestep(t), st["prev_t"].as_i64().unwrap(), "{name}: prev_t of {t}");
            let (prev, x0) = s.step_cpu(&out, t, &sample, &noise);
            let (want_prev, want_x0) = (floats(&st["prev_sample"]), floats(&st["pred_original_sample"]));
            common::assert_close(&format!("{name} t={t} x0"), &x0, &want_x0, 1e-6, 1e-6);
            common::assert_close(&format!("{name} t={t} prev"), &prev, &want_prev, 1e-6, 1e-6);
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} steps checked");
}

/// DDIMScheduler.from_config(DDPM config).step() for several configs and
/// etas (tests/fixtures/sched/ddim.json): the scalars (prev_t, std_dev_t) and
/// the step's results.
#[test]
fn ddim_steps_match_diffusers() {
    use petal::diffusion::DdimScheduler;
    let text = std::fs::read_to_string(common::repo().join("tests/fixtures/sched/ddim.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let inputs = &d["step_inputs"];
    let (sample, out, noise) = (floats(&inputs["sample"]), floats(&inputs["model_output"]), floats(&inputs["noise"]));
    let mut checked = 0;
    let mut worst = 0f32;
    for c in d["configs"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let cfg: SchedulerConfig = serde_json::from_value(c["scheduler_config"].clone()).unwrap();
        for st in c["steps"].as_array().unwrap() {
            let eta = st["eta"].as_f64().unwrap() as f32;
            let mut s = DdimScheduler::new(&cfg, eta).unwrap();
            s.set_timesteps(st["num_inference_steps"].as_u64().unwrap() as u32).unwrap();
            let t = st["t"].as_u64().unwrap() as u32;
            let what = format!("{name} eta={eta} t={t}");
            assert_eq!(s.previous_timestep(t), st["prev_t"].as_i64().unwrap(), "{what}: prev_t");
            let std = st["std_dev_t"].as_f64().unwrap() as f32;
            assert!((s.noise_std(t) - std).abs() <= 1e-7, "{what}: std_dev_t {} vs {std}", s.noise_std(t));
            let (prev, x0) = s.step_cpu(&out, t, &sample, &noise);
            let (want_prev, want_x0) = (floats(&st["prev_sample"]), floats(&st["pred_original_sample"]));
            common::assert_close(&format!("{what} x0"), &x0, &want_x0, 1e-6, 1e-6);
            common::assert_close(&format!("{what} prev"), &prev, &want_prev, 1e-6, 1e-6);
            worst = prev.iter().zip(&want_prev).fold(worst, |m, (a, b)| m.max((a - b).abs()));
            checked += 1;
        }
    }
    eprintln!("{checked} DDIM steps, worst prev_sample diff {worst:e}");
    assert!(checked >= 60, "only {checked} DDIM steps checked");
}
