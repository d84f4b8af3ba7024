//! The container setup: docker-compose.yml and the Dockerfile, checked by structure because CI has
//! no Docker engine to build or start them.

use serde_yaml_ng::Value;
use std::net::SocketAddr;
use std::path::Path;

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"))
}

fn service(compose: &Value) -> &Value {
    compose
        .get("services")
        .and_then(|services| services.get("shapewise"))
        .expect("docker-compose.yml has no service `shapewise` under `services`")
}

/// The service's entries under `key`, which must be a list.
fn list<'a>(service: &'a Value, key: &str) -> &'a [Value] {
    service
        .get(key)
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("service `shapewise` has no `{key}` list"))
}

/// The container port of one `ports` entry: `"8080"`, `"8080:8080"`, `"127.0.0.1:8080:8080/tcp"`,
/// a bare number, or the long form with `target`.
fn container_port(entry: &Value) -> Option<u64> {
    match entry {
        Value::Number(port) => port.as_u64(),
        Value::String(spec) => {
            let container = spec.rsplit(':').next()?;
            container.split('/').next()?.parse().ok()
        }
        Value::Mapping(_) => entry.get("target")?.as_u64(),
        _ => None,
    }
}

/// `(source, target)` of one `volumes` entry, short (`name:/path[:mode]`) or long form.
fn mount(entry: &Value) -> Option<(String, String)> {
    match entry {
        Value::String(spec) => {
            let mut parts = spec.split(':');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        }
        Value::Mapping(_) => Some((
            entry.get("source")?.as_str()?.to_string(),
            entry.get("target")?.as_str()?.to_string(),
        )),
        _ => None,
    }
}

/// One environment variable, from the mapping form or the `KEY=VALUE` list form.
fn env_var(service: &Value, name: &str) -> Option<String> {
    match service.get("environment")? {
        Value::Mapping(vars) => vars.get(name).and_then(Value::as_str).map(str::to_string),
        Value::Sequence(vars) => vars.iter().filter_map(Value::as_str).find_map(|var| {
            let (key, value) = var.split_once('=')?;
            (key == name).then(|| value.to_string())
        }),
        _ => None,
    }
}

#[test]
fn compose_service_builds_here_and_publishes_8080() {
    let compose = compose();
    let service = service(&compose);
    let context = match service.get("build") {
        Some(Value::String(context)) => Some(context.as_str()),
        Some(build) => build.get("context").and_then(Value::as_str),
        None => None,
    };
    assert!(
        matches!(context, Some("." | "./")),
        "service `shapewise` must build from `.`, found build context {context:?}"
    );
    let ports = list(service, "ports");
    assert!(
        ports
            .iter()
            .any(|entry| container_port(entry) == Some(8080)),
        "service `shapewise` does not publish container port 8080: ports are {ports:?}"
    );
}

#[test]
fn compose_keeps_the_database_in_a_declared_named_volume() {
    let compose = compose();
    let service = service(&compose);
    let mounts = list(service, "volumes");
    let (source, _) = mounts
        .iter()
        .filter_map(mount)
        .find(|(_, target)| target == "/data")
        .unwrap_or_else(|| panic!("service `shapewise` mounts nothing at /data: {mounts:?}"));
    // A bind mount's source is a path; a named volume's is a bare name.
    assert!(
        !source.starts_with(['/', '.', '~']),
        "/data is bind-mounted from {source:?}, not a named volume"
    );
    assert!(
        compose
            .get("volumes")
            .and_then(Value::as_mapping)
            .is_some_and(|volumes| volumes.contains_key(source.as_str())),
        "named volume {source:?} mounted at /data is not declared under top-level `volumes`"
    );

    let db = env_var(service, "SHAPEWISE_DB")
        .expect("service `shapewise` does not set SHAPEWISE_DB in `environment`");
    assert!(
        db.starts_with("/data/"),
        "SHAPEWISE_DB is {db:?}: it must lie under /data or the database is lost with the container"
    );
    let addr = env_var(service, "SHAPEWISE_ADDR")
        .expect("service `shapewise` does not set SHAPEWISE_ADDR in `environment`");
    assert_eq!(
        addr.parse::<SocketAddr>().ok(),
        Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
        "SHAPEWISE_ADDR is {addr:?}: it must bind 0.0.0.0:8080 to be reachable through the published port"
    );
    assert_eq!(
        env_var(service, "SHAPEWISE_AUTH").as_deref(),
        Some("on"),
        "a server reachable from the network must require tokens"
    );
}

#[test]
fn compose_service_has_a_healthcheck() {
    let compose = compose();
    let healthcheck = service(&compose)
        .get("healthcheck")
        .expect("service `shapewise` has no `healthcheck`");
    assert!(
        healthcheck.get("test").is_some(),
        "the healthcheck of service `shapewise` has no `test` command"
    );
    assert_ne!(
        healthcheck.get("disable").and_then(Value::as_bool),
        Some(true),
        "the healthcheck of service `shapewise` is disabled"
    );
}

/// The Dockerfile's instructions as `(KEYWORD, arguments)`, comments dropped and `\` continuation
/// lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((keyword.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

/// The words of an instruction's arguments, from the JSON form (`["a", "b"]`) or the shell form.
fn words(args: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(words) => words,
        Err(_) => args.split_whitespace().map(str::to_string).collect(),
    }
}

#[test]
fn dockerfile_is_multi_stage_and_runs_shapewise_unprivileged() {
    let instructions = dockerfile();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(keyword, _)| keyword == "FROM")
        .map(|(_, image)| image.as_str())
        .collect();
    assert!(
        stages.len() >= 2,
        "the Dockerfile must be multi-stage (a builder and a runtime FROM), found {stages:?}"
    );
    // Only the last stage becomes the image, so that is where the rest must be.
    let last_from = instructions
        .iter()
        .rposition(|(keyword, _)| keyword == "FROM")
        .expect("stages were found above");
    let runtime = &instructions[last_from..];
    let args = |keyword: &str| -> Vec<String> {
        runtime
            .iter()
            .filter(|(k, _)| k == keyword)
            .flat_map(|(_, args)| words(args))
            .collect()
    };

    assert!(
        args("EXPOSE")
            .iter()
            .any(|port| port.split('/').next() == Some("8080")),
        "the runtime stage of the Dockerfile does not EXPOSE 8080"
    );
    assert!(
        args("VOLUME").iter().any(|volume| volume == "/data"),
        "the runtime stage of the Dockerfile does not declare VOLUME /data"
    );
    assert!(
        runtime.iter().any(|(keyword, _)| keyword == "HEALTHCHECK"),
        "the runtime stage of the Dockerfile has no HEALTHCHECK"
    );

    // The last USER is the one the container runs as.
    let user = runtime
        .iter()
        .rev()
        .find(|(keyword, _)| keyword == "USER")
        .map(|(_, user)| user.as_str());
    let name = user.and_then(|user| user.split(':').next());
    assert!(
        name.is_some_and(|name| name != "root" && name != "0"),
        "the runtime stage must switch to a non-root USER, found {user:?}"
    );

    let entrypoint = runtime
        .iter()
        .rev()
        .find(|(keyword, _)| keyword == "ENTRYPOINT")
        .map(|(_, entrypoint)| words(entrypoint))
        .expect("the runtime stage of the Dockerfile has no ENTRYPOINT");
    assert!(
        entrypoint
            .first()
            .and_then(|program| Path::new(program).file_name())
            .is_some_and(|program| program == "shapewise"),
        "the ENTRYPOINT must run shapewise, found {entrypoint:?}"
    );
}
