//! The scale-out recipes under `deploy/` and the compose workers, checked by structure (CI has
//! no cluster; `.ci/run` also validates the Kubernetes manifests against the API schemas with
//! `kubernetes-validate --strict` and the sbatch script with `shellcheck`).

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::path::Path;

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every document of a multi-document YAML file.
fn documents(file: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&read(file))
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"))
        })
        .collect()
}

fn kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    (documents.iter())
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// A container's environment variable: its value, or `secret:NAME/KEY` for a secret reference.
fn env(container: &Value, name: &str) -> Option<String> {
    let var = (container["env"].as_sequence()?.iter()).find(|v| v["name"] == name)?;
    if let Some(value) = var["value"].as_str() {
        return Some(value.to_string());
    }
    let secret = &var["valueFrom"]["secretKeyRef"];
    Some(format!(
        "secret:{}/{}",
        secret["name"].as_str()?,
        secret["key"].as_str()?
    ))
}

fn strings(value: &Value) -> Vec<&str> {
    (value.as_sequence().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn kubernetes_server_keeps_its_database_on_a_volume_behind_a_service() {
    let docs = documents("deploy/kubernetes/server.yaml");
    let claim = kind(&docs, "PersistentVolumeClaim");
    let deployment = kind(&docs, "Deployment");
    let service = kind(&docs, "Service");
    let spec = &deployment["spec"];
    // One replica, replaced (not rolled): one process writes the SQLite database.
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    let pod = &spec["template"]["spec"];
    let server = container(deployment);
    let volume = (pod["volumes"].as_sequence().unwrap().iter())
        .find(|v| v["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"])
        .expect("the pod mounts no volume from the claim");
    let mount = (server["volumeMounts"].as_sequence().unwrap().iter())
        .find(|m| m["name"] == volume["name"])
        .expect("the container does not mount the claim's volume");
    let data = mount["mountPath"].as_str().unwrap();
    assert!(
        env(server, "SHAPEWISE_DB")
            .unwrap()
            .starts_with(&format!("{data}/"))
    );
    assert_eq!(env(server, "SHAPEWISE_AUTH").as_deref(), Some("on"));
    assert_eq!(env(server, "SHAPEWISE_WORKERS").as_deref(), Some("0"));
    assert_eq!(
        env(server, "SHAPEWISE_ADMIN_TOKEN").as_deref(),
        Some("secret:shapewise-tokens/admin-token")
    );
    assert_eq!(
        env(server, "SHAPEWISE_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(server["ports"][0]["containerPort"], 8080);
    assert_eq!(server["readinessProbe"]["httpGet"]["path"], "/healthz");
    // The Service selects the server's pods and reaches its named port.
    let labels = &spec["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[key], value, "the Service selects {key:?}");
    }
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        server["ports"][0]["name"]
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
}

#[test]
fn kubernetes_workers_request_a_gpu_and_reach_the_server_service() {
    let server = documents("deploy/kubernetes/server.yaml");
    let service = kind(&server, "Service");
    let docs = documents("deploy/kubernetes/worker.yaml");
    let deployment = kind(&docs, "Deployment");
    let worker = container(deployment);
    assert_eq!(strings(&worker["args"]), ["worker", "--device", "gpu"]);
    assert_eq!(worker["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(
        env(worker, "SHAPEWISE_SERVER"),
        Some(format!(
            "http://{}:{}",
            service["metadata"]["name"].as_str().unwrap(),
            service["spec"]["ports"][0]["port"].as_u64().unwrap()
        ))
    );
    assert_eq!(
        env(worker, "SHAPEWISE_TOKEN").as_deref(),
        Some("secret:shapewise-tokens/worker-token")
    );
    assert!(worker["image"].as_str().unwrap().ends_with(":vulkan"));
    // Time to stop between two steps and hand the run back.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace >= 30);
    // The server's pods and the workers' are told apart by their labels.
    let worker_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects_workers = (service["spec"]["selector"].as_mapping().unwrap().iter())
        .all(|(key, value)| &worker_labels[key] == value);
    assert!(
        !selects_workers,
        "the server's Service would route to workers"
    );
}

#[test]
fn slurm_script_runs_an_array_of_gpu_workers_that_hand_back_on_sigterm() {
    let script = read("deploy/slurm/shapewise-worker.sbatch");
    let directives: Vec<&str> = (script.lines())
        .filter_map(|line| line.strip_prefix("#SBATCH "))
        .collect();
    for expected in ["--array=", "--gres=gpu:1", "--signal=B:TERM@"] {
        assert!(
            directives.iter().any(|d| d.starts_with(expected)),
            "no #SBATCH {expected}: {directives:?}"
        );
    }
    assert!(script.starts_with("#!/bin/bash\n"));
    assert!(script.contains(r#"${SHAPEWISE_SERVER:?"#));
    assert!(script.contains(r#"${SHAPEWISE_TOKEN:?"#));
    assert!(script.contains(r#""$bin" worker --device "$device""#));
    // SIGTERM reaches the worker, and the script waits for it to hand its run back.
    assert!(script.contains(r#"trap 'kill -TERM "$worker""#));
    let syntax = std::process::Command::new("bash")
        .args(["-n", "deploy/slurm/shapewise-worker.sbatch"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n refuses the script");
}

#[test]
fn compose_workers_scale_beside_the_server_and_the_gpu_variant_builds_with_vulkan() {
    let compose: Value = serde_yaml_ng::from_str(&read("docker-compose.yml")).unwrap();
    let services = &compose["services"];
    for (name, device) in [("worker", "cpu"), ("worker-gpu", "gpu")] {
        let worker = &services[name];
        assert_eq!(
            strings(&worker["command"]),
            ["worker", "--device", device],
            "{name}"
        );
        assert!(
            worker["profiles"]
                .as_sequence()
                .is_some_and(|p| !p.is_empty())
        );
        assert!(
            worker.get("ports").is_none(),
            "{name} publishes ports: --scale would clash"
        );
        assert!(
            worker.get("container_name").is_none(),
            "{name} cannot scale with a fixed name"
        );
        let environment = &worker["environment"];
        assert_eq!(
            environment["SHAPEWISE_SERVER"], "http://shapewise:8080",
            "{name}"
        );
        assert!(
            environment["SHAPEWISE_TOKEN"]
                .as_str()
                .unwrap()
                .contains("SHAPEWISE_WORKER_TOKEN")
        );
        assert_eq!(
            worker["depends_on"]["shapewise"]["condition"], "service_healthy",
            "{name}"
        );
    }
    let gpu = &services["worker-gpu"];
    assert_eq!(gpu["build"]["args"]["FEATURES"], "vulkan");
    assert_eq!(
        gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"],
        "nvidia"
    );
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("ARG FEATURES"));
    assert!(dockerfile.contains(r#"--features "$FEATURES""#));
}
