//! `GET, POST /runs/new`: the new-run form.

use super::{
    FieldView, Fieldset, PARAMETERIZATIONS, Page, PageError, SelectOption, mentions, options,
    parse_whole, render, same_origin,
};
use crate::train::RunConfig;
use crate::web::error::ApiError;
use crate::web::{AppState, ServerSettings};
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The form's fields, as typed (every field optional: missing ones take the config defaults).
#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct NewRunForm {
    parameterization: Option<String>,
    alpha: Option<String>,
    width: Option<String>,
    depth: Option<String>,
    d_head: Option<String>,
    context: Option<String>,
    batch: Option<String>,
    lr: Option<String>,
    init_std: Option<String>,
    tokens: Option<String>,
    tokens_per_param: Option<String>,
    seed: Option<String>,
    base_width: Option<String>,
    base_depth: Option<String>,
    weight_decay: Option<String>,
    eps: Option<String>,
    data_vocab: Option<String>,
    data_seed: Option<String>,
    name: Option<String>,
    tags: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldKind {
    Integer,
    Real,
    Text,
}

/// One input of the form: its name, label, hint and kind.
struct FieldSpec {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: FieldKind,
    get: fn(&NewRunForm) -> &Option<String>,
}

const MODEL_FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "alpha",
        label: "Alpha",
        hint: "only for “muP + depth, custom alpha”: a value in [0.5, 1]",
        kind: FieldKind::Real,
        get: |f| &f.alpha,
    },
    FieldSpec {
        name: "width",
        label: "Width N",
        hint: "a multiple of d_head",
        kind: FieldKind::Integer,
        get: |f| &f.width,
    },
    FieldSpec {
        name: "depth",
        label: "Depth L (blocks)",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.depth,
    },
    FieldSpec {
        name: "d_head",
        label: "Head dimension d_head",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.d_head,
    },
    FieldSpec {
        name: "context",
        label: "Context length T",
        hint: "tokens per sequence",
        kind: FieldKind::Integer,
        get: |f| &f.context,
    },
];

const TRAINING_FIELDS: [FieldSpec; 6] = [
    FieldSpec {
        name: "lr",
        label: "Base learning rate",
        hint: "eta at the base shape; the plan scales it per group",
        kind: FieldKind::Real,
        get: |f| &f.lr,
    },
    FieldSpec {
        name: "init_std",
        label: "Base init std",
        hint: "",
        kind: FieldKind::Real,
        get: |f| &f.init_std,
    },
    FieldSpec {
        name: "batch",
        label: "Batch (sequences per step)",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.batch,
    },
    FieldSpec {
        name: "tokens",
        label: "Training tokens",
        hint: "leave empty to use tokens per parameter",
        kind: FieldKind::Integer,
        get: |f| &f.tokens,
    },
    FieldSpec {
        name: "tokens_per_param",
        label: "Tokens per parameter",
        hint: "used when training tokens is empty (20 is Chinchilla-optimal)",
        kind: FieldKind::Real,
        get: |f| &f.tokens_per_param,
    },
    FieldSpec {
        name: "seed",
        label: "Seed",
        hint: "initial weights and batch order",
        kind: FieldKind::Integer,
        get: |f| &f.seed,
    },
];

const BASE_FIELDS: [FieldSpec; 4] = [
    FieldSpec {
        name: "base_width",
        label: "Base width N_base",
        hint: "the shape the base hyperparameters were tuned at",
        kind: FieldKind::Integer,
        get: |f| &f.base_width,
    },
    FieldSpec {
        name: "base_depth",
        label: "Base depth L_base",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.base_depth,
    },
    FieldSpec {
        name: "weight_decay",
        label: "Base weight decay",
        hint: "",
        kind: FieldKind::Real,
        get: |f| &f.weight_decay,
    },
    FieldSpec {
        name: "eps",
        label: "Base AdamW epsilon",
        hint: "",
        kind: FieldKind::Real,
        get: |f| &f.eps,
    },
];

const DATA_FIELDS: [FieldSpec; 2] = [
    FieldSpec {
        name: "data_vocab",
        label: "Corpus vocabulary",
        hint: "tokens of the built-in corpus, 16 to 65536",
        kind: FieldKind::Integer,
        get: |f| &f.data_vocab,
    },
    FieldSpec {
        name: "data_seed",
        label: "Corpus seed",
        hint: "the corpus content (not the run's seed)",
        kind: FieldKind::Integer,
        get: |f| &f.data_seed,
    },
];

const LABEL_FIELDS: [FieldSpec; 2] = [
    FieldSpec {
        name: "name",
        label: "Name",
        hint: "optional",
        kind: FieldKind::Text,
        get: |f| &f.name,
    },
    FieldSpec {
        name: "tags",
        label: "Tags",
        hint: "optional, separated by commas",
        kind: FieldKind::Text,
        get: |f| &f.tags,
    },
];

fn all_fields() -> impl Iterator<Item = &'static FieldSpec> {
    MODEL_FIELDS
        .iter()
        .chain(&TRAINING_FIELDS)
        .chain(&BASE_FIELDS)
        .chain(&DATA_FIELDS)
        .chain(&LABEL_FIELDS)
}

#[derive(Template)]
#[template(path = "new_run.html")]
struct NewRunTemplate {
    page: Page,
    parameterizations: Vec<SelectOption>,
    parameterization_invalid: bool,
    fieldsets: Vec<Fieldset>,
    error: String,
    /// The run's estimated peak memory against the server's limit, in words (empty when the
    /// form does not describe a valid run).
    estimate: String,
    /// Whether that estimate fits the limit.
    estimate_fits: bool,
}

impl NewRunForm {
    /// The form pre-filled with the config defaults.
    fn defaults() -> NewRunForm {
        let c = RunConfig::default();
        let (data_seed, data_vocab) = match c.data {
            crate::data::DataSource::Builtin { seed, vocab } => (seed, vocab),
            _ => (0, 256),
        };
        let s = |v: String| Some(v);
        NewRunForm {
            parameterization: s(c.parameterization.name().into()),
            alpha: None,
            width: s(c.width.to_string()),
            depth: s(c.depth.to_string()),
            d_head: s(c.d_head.to_string()),
            context: s(c.context.to_string()),
            batch: s(c.batch.to_string()),
            lr: s(c.lr.to_string()),
            init_std: s(c.init_std.to_string()),
            tokens: None,
            tokens_per_param: s(c.tokens_per_param.to_string()),
            seed: s(c.seed.to_string()),
            base_width: s(c.base_width.to_string()),
            base_depth: s(c.base_depth.to_string()),
            weight_decay: s(c.weight_decay.to_string()),
            eps: s(c.eps.to_string()),
            data_vocab: s(data_vocab.to_string()),
            data_seed: s(data_seed.to_string()),
            name: None,
            tags: None,
        }
    }

    /// The create-run JSON body the API takes, or the message and the field at fault.
    fn to_json(&self) -> Result<Map<String, Value>, (String, &'static str)> {
        let mut body = Map::new();
        fn text(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        if let Some(p) = text(&self.parameterization) {
            body.insert("parameterization".into(), p.into());
        }
        let mut data = Map::new();
        data.insert("kind".into(), "builtin".into());
        data.insert("seed".into(), 0.into());
        data.insert("vocab".into(), 256.into());
        for spec in all_fields() {
            let Some(raw) = text((spec.get)(self)) else {
                continue;
            };
            let value: Value = match spec.kind {
                FieldKind::Integer => parse_whole(raw)
                    .ok_or_else(|| {
                        (
                            format!(
                                "{} must be a whole number of at least 0, got '{raw}'",
                                spec.name
                            ),
                            spec.name,
                        )
                    })?
                    .into(),
                FieldKind::Real => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        (
                            format!("{} must be a number, got '{raw}'", spec.name),
                            spec.name,
                        )
                    })?
                    .into(),
                FieldKind::Text if spec.name == "tags" => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| Value::String(t.into()))
                        .collect(),
                ),
                FieldKind::Text => raw.into(),
            };
            match spec.name {
                "data_vocab" => {
                    data.insert("vocab".into(), value);
                }
                "data_seed" => {
                    data.insert("seed".into(), value);
                }
                name => {
                    body.insert(name.into(), value);
                }
            }
        }
        body.insert("data".into(), Value::Object(data));
        Ok(body)
    }
}

/// The estimate the page shows for the form as typed (`POST /api/v1/runs/estimate` updates it
/// as the user types): its words and whether it fits; nothing for a form that is not a valid run.
fn form_estimate(form: &NewRunForm, settings: &ServerSettings) -> (String, bool) {
    let Ok(mut body) = form.to_json() else {
        return (String::new(), true);
    };
    body.remove("name");
    body.remove("tags");
    let Ok(config) = serde_json::from_value::<RunConfig>(Value::Object(body)) else {
        return (String::new(), true);
    };
    match crate::web::runs::run_estimate(&config, settings) {
        Ok(estimate) => (estimate.detail().to_string(), estimate.fits()),
        Err(_) => (String::new(), true),
    }
}

fn new_run_template(
    form: &NewRunForm,
    error: &str,
    invalid: &[&str],
    settings: &ServerSettings,
) -> NewRunTemplate {
    let (estimate, estimate_fits) = form_estimate(form, settings);
    let view = |specs: &[FieldSpec]| -> Vec<FieldView> {
        specs
            .iter()
            .map(|spec| FieldView {
                name: spec.name,
                label: spec.label,
                hint: spec.hint,
                input_type: if spec.kind == FieldKind::Text {
                    "text"
                } else {
                    "number"
                },
                step: if spec.kind == FieldKind::Integer {
                    "1"
                } else {
                    "any"
                },
                value: (spec.get)(form).clone().unwrap_or_default(),
                invalid: invalid.contains(&spec.name),
            })
            .collect()
    };
    let fieldset = |legend, specs: &[FieldSpec], advanced: bool| {
        let fields = view(specs);
        let open = !advanced || fields.iter().any(|f| f.invalid);
        Fieldset {
            legend,
            fields,
            advanced,
            open,
        }
    };
    NewRunTemplate {
        page: Page::new("New run", "new"),
        parameterizations: options(
            &PARAMETERIZATIONS,
            form.parameterization.as_deref().unwrap_or_default(),
        ),
        parameterization_invalid: invalid.contains(&"parameterization"),
        fieldsets: vec![
            fieldset("Model shape", &MODEL_FIELDS, false),
            fieldset("Training", &TRAINING_FIELDS, false),
            fieldset("Base shape and hyperparameters", &BASE_FIELDS, true),
            fieldset("Data: built-in corpus", &DATA_FIELDS, false),
            fieldset("Labels", &LABEL_FIELDS, false),
        ],
        error: error.to_string(),
        estimate,
        estimate_fits,
    }
}

pub(super) async fn new_run_form(State(state): State<AppState>) -> Result<Response, PageError> {
    render(
        StatusCode::OK,
        &new_run_template(&NewRunForm::defaults(), "", &[], &state.settings),
    )
}

/// `POST /runs/new`: creates and queues the run, then 303 to its page; an invalid run shows the
/// form again with the values typed and the reason (422).
pub(super) async fn new_run_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<NewRunForm>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let Form(form) = form.map_err(|e| PageError::new(e.status(), e.body_text()))?;
    let refuse = |message: String, invalid: Vec<&str>| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &new_run_template(&form, &message, &invalid, &state.settings),
        )
    };
    let body = match form.to_json() {
        Ok(body) => body,
        Err((message, field)) => return refuse(message, vec![field]),
    };
    let parsed = match crate::web::body::from_object(body) {
        Ok(parsed) => crate::web::runs::parse_new_run(parsed, &state.settings).await,
        Err(e) => Err(e),
    };
    let new = match parsed {
        Ok(new) => new,
        Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail).into()),
        Err(e) => {
            let message = e.to_string();
            let invalid: Vec<&str> = std::iter::once("parameterization")
                .chain(all_fields().map(|f| f.name))
                .filter(|name| mentions(&message, name))
                .collect();
            return refuse(message, invalid);
        }
    };
    let id = state.store.create_run(&new).await?;
    state.jobs.wake();
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_builds_the_api_body() {
        let mut form = NewRunForm::defaults();
        form.tags = Some(" a, b ,,".into());
        form.tokens = Some("3e6".into());
        let body = form.to_json().unwrap();
        assert_eq!(body["width"], 128);
        assert_eq!(body["tokens"], 3_000_000);
        assert_eq!(body["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(body["data"]["vocab"], 256);
        assert!(!body.contains_key("alpha"));
        form.width = Some("wide".into());
        assert_eq!(form.to_json().unwrap_err().1, "width");
    }
}
