mod common;
use lightops_ml::data::{KeyColumn, read_trips};
use lightops_ml::drift::{DriftOptions, Method, compare};
use lightops_ml::profile::{DEFAULT_MAX_DISTINCT, Profile, WindowStats};
use lightops_ml::{Artifact, Ride};
#[test]
fn scratch() {
    let Some(dir) = common::data_dir() else { return };
    let a = Artifact::load(&common::root().join("bench/reference/evidently_real_model.json")).unwrap();
    let prof = |n: &str| {
        let t = read_trips(&dir.join(n), &a.model.spec).unwrap();
        let p = a.model.predict_trips(&t);
        (Profile::from_trips(&a.model.spec, &t, &p, DEFAULT_MAX_DISTINCT).unwrap(), t, p)
    };
    let (r, _, _) = prof("green_tripdata_2022-01.parquet");
    let (c, t, p) = prof("green_tripdata_2022-03.parquet");
    let (KeyColumn::Int(pu), KeyColumn::Int(d)) = (&t.keys[0], &t.keys[1]) else { panic!() };
    let start = std::time::Instant::now();
    let mut w = WindowStats::new(&r).unwrap();
    for i in 0..t.len() {
        w.push_ride(&Ride { pu_location_id: pu[i], do_location_id: d[i], trip_distance: t.numeric[0][i] }, p[i])
            .unwrap();
    }
    let e = start.elapsed();
    eprintln!("push {} rides: {:?} ({:.0} ns/ride)", t.len(), e, e.as_nanos() as f64 / t.len() as f64);
    let start = std::time::Instant::now();
    let f = w.finish();
    eprintln!("finish: {:?}", start.elapsed());
    assert_eq!(f, c);
    for m in [None, Some(Method::Ks), Some(Method::Psi), Some(Method::JensenShannon)] {
        for col in ["PULocationID", "trip_distance", "prediction"] {
            if m == Some(Method::Ks) && col == "PULocationID" {
                continue;
            }
            let mut o = DriftOptions::default();
            if let Some(m) = m {
                o.methods.insert(col.into(), m);
            }
            let start = std::time::Instant::now();
            for _ in 0..20 {
                compare(&r, &c, &o).unwrap();
            }
            eprintln!("{col} {:?}: 4 columns in {:?}", m, start.elapsed() / 20);
        }
    }
}
