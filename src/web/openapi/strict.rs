//! What the derived schemas cannot say about the requests the server accepts, added to the
//! document as JSON: the ranges of run-config integers (from [`crate::web::bounds`], the table
//! the handlers check), the items of lists, the closed shape of a create-run body (one object,
//! no `allOf`, so that `additionalProperties: false` holds), run selections and their filters
//! (one pattern per column, from the parser's own column kinds), the two ways to give a
//! planner's budget, and each diagnostic kind's options (from the kind's defaults).
//!
//! Every edit names the schema or parameter it changes and panics when it is missing, so a
//! renamed mirror fails the document's tests rather than silently loosening the document.

use crate::jobs::DiagnosticKind;
use crate::store::FILTER_COLUMNS;
use crate::web::bounds::{DATA_FIELDS, IntRange, RUN_INTEGERS, run_integer};
use crate::web::runs::{ColumnKind, column_kind, filter_pattern};
use serde_json::{Map, Value, json};

/// Applies every rule below to a serialized document.
pub(super) fn tighten(doc: &mut Value) {
    run_settings(doc);
    data_sources(doc);
    create_run(doc);
    tag_lists(doc);
    sweep_grid(doc);
    selection(doc);
    run_list_parameters(doc);
    plan_parameters(doc);
    recommend_budget(doc);
    diagnostics(doc);
    query_parameters_are_not_null(doc);
}

fn schema<'a>(doc: &'a mut Value, name: &str) -> &'a mut Value {
    doc.pointer_mut(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("the document has no schema {name}"))
}

fn property<'a>(schema: &'a mut Value, name: &str) -> &'a mut Value {
    schema
        .get_mut("properties")
        .and_then(|p| p.get_mut(name))
        .unwrap_or_else(|| panic!("no property {name}"))
}

fn set_range(target: &mut Value, range: IntRange) {
    target["minimum"] = json!(range.min);
    target["maximum"] = json!(range.max);
}

fn range(key: &str) -> IntRange {
    run_integer(key).unwrap_or_else(|| panic!("no range for {key}"))
}

/// `additionalProperties: false`.
fn close(schema: &mut Value) {
    schema["additionalProperties"] = json!(false);
}

/// A tag: 1 to 100 characters (see `web::runs`).
fn tag_item() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 100})
}

/// The integers of [`RUN_INTEGERS`], each in its range.
fn run_settings(doc: &mut Value) {
    let settings = schema(doc, "RunConfig");
    for range in RUN_INTEGERS {
        set_range(property(settings, range.key), range);
    }
}

/// Each kind of data source: its own fields only, integers in range.
fn data_sources(doc: &mut Value) {
    let variants = schema(doc, "DataSource")["oneOf"]
        .as_array_mut()
        .expect("DataSource is a oneOf");
    assert_eq!(variants.len(), DATA_FIELDS.len(), "DataSource kinds");
    for variant in variants {
        let kind = variant
            .pointer("/properties/kind/enum/0")
            .and_then(Value::as_str)
            .expect("a kind")
            .to_string();
        let (_, fields, ranges) = DATA_FIELDS
            .iter()
            .find(|(k, ..)| *k == kind)
            .unwrap_or_else(|| panic!("no data fields for kind {kind}"));
        for field in fields.iter() {
            property(variant, field);
        }
        for range in ranges.iter() {
            set_range(property(variant, range.key), *range);
        }
        close(variant);
    }
}

/// `CreateRun` as one closed object: the run settings with the shape and rule required, name and
/// tags.
fn create_run(doc: &mut Value) {
    let settings = schema(doc, "RunConfig").clone();
    let create = schema(doc, "CreateRun");
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    let parts = create
        .as_object_mut()
        .and_then(|o| o.remove("allOf"))
        .and_then(|a| a.as_array().cloned())
        .expect("CreateRun flattens RunConfig (allOf)");
    for part in parts {
        let part = if part.get("$ref").is_some() {
            settings.clone()
        } else {
            part
        };
        if let Some(p) = part.get("properties").and_then(Value::as_object) {
            properties.extend(p.clone());
        }
        if let Some(r) = part.get("required").and_then(Value::as_array) {
            required.extend(r.iter().cloned());
        }
    }
    required.extend(["parameterization", "width", "depth"].map(Value::from));
    create["type"] = json!("object");
    create["properties"] = Value::Object(properties);
    create["required"] = Value::Array(required);
    for key in ["width", "depth"] {
        set_range(property(create, key), range(key));
    }
    close(create);
}

fn tag_lists(doc: &mut Value) {
    for (name, field) in [
        ("CreateRun", "tags"),
        ("TagEdit", "add"),
        ("TagEdit", "remove"),
        ("CreateSweep", "tags"),
    ] {
        property(schema(doc, name), field)["items"] = tag_item();
    }
}

/// The items of a sweep's lists: in the range of the run setting each becomes.
fn sweep_grid(doc: &mut Value) {
    // The shared settings: a run's, less what the grid and the sweep set.
    let mut shared = schema(doc, "RunConfig").clone();
    for key in ["parameterization", "width", "depth"] {
        shared["properties"]
            .as_object_mut()
            .expect("RunConfig has properties")
            .remove(key);
    }
    let sweep = schema(doc, "CreateSweep");
    *property(sweep, "config") = json!({"oneOf": [{"type": "null"}, shared]});
    for (list, key) in [("widths", "width"), ("depths", "depth"), ("seeds", "seed")] {
        let items = &mut property(sweep, list)["items"];
        *items = json!({"type": "integer", "format": "int64"});
        set_range(items, range(key));
    }
    // One list of positive rates for all parameterizations, or one per parameterization.
    let lrs =
        json!({"type": "array", "minItems": 1, "items": {"type": "number", "exclusiveMinimum": 0}});
    *property(sweep, "lrs") = json!({
        "description": "Base learning rates: one list for every parameterization, or an object \
            with one list per parameterization of the sweep",
        "oneOf": [lrs, {"type": "object", "minProperties": 1, "additionalProperties": lrs}],
    });
    // Either the grid or the list of shapes.
    sweep["oneOf"] = json!([
        {"required": ["widths", "depths"], "not": {"required": ["shapes"]}},
        {"required": ["shapes"], "not": {"anyOf": [{"required": ["widths"]}, {"required": ["depths"]}]}},
    ]);
    let shape = schema(doc, "SweepShape");
    for key in ["width", "depth", "tokens"] {
        let p = property(shape, key);
        *p = json!({"type": "integer", "format": "int64"});
        set_range(p, range(key));
    }
    close(shape);
}

/// A run selection: an object with exactly one of its four kinds; the filters one property
/// per filter column (and `tag`).
fn selection(doc: &mut Value) {
    let one = |key: &str, value: Value| {
        json!({
            "type": "object",
            "properties": {key: value},
            "required": [key],
            "additionalProperties": false,
        })
    };
    let selection = schema(doc, "RunSelection");
    selection
        .as_object_mut()
        .expect("an object")
        .remove("oneOf");
    selection["oneOf"] = json!([
        one(
            "run_ids",
            json!({
                "type": "array",
                "items": {"type": "integer", "format": "int64"},
                "minItems": 1,
                "maxItems": crate::web::fits::MAX_SELECTED_RUNS,
            })
        ),
        one("sweep_id", json!({"type": "integer", "format": "int64"})),
        one(
            "tags",
            json!({
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": crate::web::fits::MAX_SELECTED_TAGS,
            })
        ),
        one(
            "filters",
            json!({"$ref": "#/components/schemas/RunFilterValues"})
        ),
    ]);

    let mut properties = Map::new();
    for column in FILTER_COLUMNS.iter().chain(&["tag"]) {
        let number = match column_kind(column) {
            ColumnKind::Integer if *column != "tag" => {
                json!({"type": "integer", "format": "int64"})
            }
            _ => json!({"type": "number"}),
        };
        let text = match filter_pattern(column) {
            Some(pattern) if *column != "tag" => json!({"type": "string", "pattern": pattern}),
            _ => json!({"type": "string"}),
        };
        let single = json!([text, number]);
        properties.insert(
            column.to_string(),
            json!({
                "anyOf": [
                    single[0], single[1],
                    {
                        "type": "array",
                        "items": {"anyOf": single},
                        "maxItems": crate::web::fits::MAX_FILTER_VALUES,
                    },
                ],
            }),
        );
    }
    let filters = schema(doc, "RunFilterValues");
    filters["type"] = json!("object");
    filters["properties"] = Value::Object(properties);
    close(filters);
}

/// The parameters of one operation.
fn parameters<'a>(doc: &'a mut Value, path: &str, method: &str) -> &'a mut Vec<Value> {
    doc.get_mut("paths")
        .and_then(|p| p.get_mut(path))
        .and_then(|p| p.get_mut(method))
        .and_then(|o| o.get_mut("parameters"))
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
}

fn parameter<'a>(parameters: &'a mut [Value], name: &str) -> &'a mut Value {
    parameters
        .iter_mut()
        .find(|p| p["name"] == name)
        .map(|p| &mut p["schema"])
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

/// The filters of the runs listing and its CSV export: the pattern of each column's values,
/// and the columns `sort` takes.
fn run_list_parameters(doc: &mut Value) {
    let sorts: Vec<String> = FILTER_COLUMNS
        .iter()
        .flat_map(|c| [c.to_string(), format!("-{c}")])
        .collect();
    for path in ["/api/v1/runs", "/api/v1/runs.csv"] {
        let parameters = parameters(doc, path, "get");
        for column in FILTER_COLUMNS {
            let schema = parameter(parameters, column);
            *schema = match filter_pattern(column) {
                Some(pattern) => json!({"type": "string", "pattern": pattern}),
                None => json!({"type": "string"}),
            };
        }
        let sort = parameter(parameters, "sort");
        sort["type"] = json!("string");
        sort["enum"] = json!(sorts);
    }
}

/// The sizes of the plan: those of a run config.
fn plan_parameters(doc: &mut Value) {
    let parameters = parameters(doc, "/api/v1/plan", "get");
    for key in ["width", "depth", "base_width", "base_depth", "d_head"] {
        set_range(parameter(parameters, key), range(key));
    }
}

/// The planner's budget: `budget_flops`, or `device_hours` with `flops_per_second`, never
/// both. Two closed objects, one per way.
fn recommend_budget(doc: &mut Value) {
    let request = schema(doc, "RecommendRequest");
    let base = request.clone();
    let branch = |title: &str, given: &[&str], absent: &[&str]| {
        let mut branch = base.clone();
        let object = branch.as_object_mut().expect("an object");
        for key in ["description", "example"] {
            object.remove(key);
        }
        branch["title"] = json!(title);
        for key in given {
            property(&mut branch, key)["type"] = json!("number");
            branch["required"]
                .as_array_mut()
                .expect("required fields")
                .push(json!(key));
        }
        for key in absent {
            *property(&mut branch, key) = json!({"type": "null"});
        }
        branch
    };
    let flops = branch(
        "Budget in FLOPs",
        &["budget_flops"],
        &["device_hours", "flops_per_second"],
    );
    let hours = branch(
        "Budget in device-hours",
        &["device_hours", "flops_per_second"],
        &["budget_flops"],
    );
    *request = json!({
        "description": base["description"],
        "example": base["example"],
        "anyOf": [flops, hours],
    });
}

/// The schema of one option of a diagnostic (see `crate::coord` and `crate::linearize` for
/// the checks).
fn option_schema(key: &str) -> Value {
    use crate::coord::{MAX_DEPTH, MAX_SEEDS, MAX_STEPS, MAX_WIDTH};
    let integer = |min: u64, max: u64| json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max});
    let sizes = |max: usize| {
        json!({
            "type": "array",
            "items": integer(1, max as u64),
            "minItems": 1,
            "maxItems": crate::coord::MAX_SIZES,
        })
    };
    match key {
        // Alpha needs its own alpha, which the options cannot give.
        "parameterizations" => json!({
            "type": "array",
            "items": {"type": "string", "enum": ["sp", "mup", "depth-mup", "completep"]},
            "minItems": 1,
        }),
        "depths" => sizes(MAX_DEPTH),
        "widths" => sizes(MAX_WIDTH),
        "width" => integer(1, MAX_WIDTH as u64),
        "depth" => integer(1, MAX_DEPTH as u64),
        "steps" => integer(1, MAX_STEPS),
        "seeds" => integer(1, MAX_SEEDS),
        "lr" => json!({"type": "number", "exclusiveMinimum": 0}),
        // `crate::coord::check_seeds_lr_batch`.
        "batch" => integer(1, 256),
        "context" => integer(1, 1024),
        "d_head" => integer(1, MAX_WIDTH as u64),
        "attention_scale" => json!({"$ref": "#/components/schemas/AttentionScale"}),
        other => panic!("diagnostic option '{other}' is not described"),
    }
}

/// `CreateDiagnostic`: one closed object per kind, each with its own options (every option
/// optional, defaulting to the kind's).
fn diagnostics(doc: &mut Value) {
    let mut variants = Vec::new();
    let mut mapping = Map::new();
    for kind in DiagnosticKind::ALL {
        let name = match kind {
            DiagnosticKind::CoordDepth => "CoordDepth",
            DiagnosticKind::CoordWidth => "CoordWidth",
            DiagnosticKind::Linearization => "Linearization",
        };
        let mut properties = Map::new();
        for (key, default) in kind.default_options() {
            let mut option = option_schema(&key);
            option["default"] = default;
            properties.insert(key, option);
        }
        let options = json!({
            "type": "object",
            "description": format!("Options of a `{}` diagnostic; each defaults as shown.", kind.name()),
            "properties": properties,
            "additionalProperties": false,
        });
        let request = json!({
            "type": "object",
            "description": format!("A `{}` diagnostic: {}.", kind.name(), kind.title()),
            "properties": {
                "kind": {"type": "string", "enum": [kind.name()]},
                "options": {"oneOf": [
                    {"$ref": format!("#/components/schemas/{name}Options")},
                    {"type": "null"},
                ]},
            },
            "required": ["kind"],
            "additionalProperties": false,
        });
        let schemas = doc
            .pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut)
            .expect("component schemas");
        schemas.insert(format!("{name}Options"), options);
        schemas.insert(format!("{name}Diagnostic"), request);
        let reference = format!("#/components/schemas/{name}Diagnostic");
        variants.push(json!({"$ref": reference}));
        mapping.insert(kind.name().into(), json!(reference));
    }
    let create = schema(doc, "CreateDiagnostic");
    *create = json!({
        "description": create["description"],
        "example": create["example"],
        "oneOf": variants,
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    });
}

/// A query parameter is absent or a string: never `null`.
fn query_parameters_are_not_null(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                if let Some(types) = parameter
                    .pointer_mut("/schema/type")
                    .and_then(Value::as_array_mut)
                {
                    types.retain(|t| t != "null");
                    if types.len() == 1 {
                        let only = types[0].clone();
                        parameter["schema"]["type"] = only;
                    }
                }
            }
        }
    }
}
