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
