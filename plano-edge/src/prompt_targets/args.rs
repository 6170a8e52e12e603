//! Parameters as JSON schema for the model, and the model's arguments checked against them.
//!
//! Checking is strict about meaning and lenient about spelling: a number sent as a numeric
//! string, `"true"`/`"false"` for a bool, `3.0` for an int and a number or bool for a
//! string are accepted (converted); anything else of the wrong type is invalid. Keys that
//! are not parameters are dropped (models invent some), `null` counts as absent.

use plano_config::{ParamType, PromptParameter, PromptTarget};
use serde_json::{Map, Number, Value, json};

#[derive(Debug, PartialEq)]
pub(crate) enum ArgError {
    /// Required parameters the model did not give (names, in parameter order).
    Missing(Vec<String>),
    /// The arguments cannot be used: not JSON, not an object, a wrong type, not in enum.
    Invalid(String),
}

pub(crate) fn schema(p: &PromptParameter) -> Value {
    let ty = match p.ty {
        ParamType::String => "string",
        ParamType::Int => "integer",
        ParamType::Float => "number",
        ParamType::Bool => "boolean",
        ParamType::List => "array",
        ParamType::Dict => "object",
    };
    let mut s = json!({"type": ty});
    let mut description = p.description.clone().unwrap_or_default();
    if let Some(f) = &p.format {
        if !description.is_empty() {
            description.push(' ');
        }
        description.push_str(&format!("(format: {f})"));
    }
    if !description.is_empty() {
        s["description"] = Value::String(description);
    }
    if !p.enum_values.is_empty() {
        s["enum"] = Value::Array(p.enum_values.clone());
    }
    if let Some(d) = &p.default {
        s["default"] = d.clone();
    }
    s
}

/// The defaults of a target's parameters (for the `default` target, which no model chose).
pub(crate) fn defaults(target: &PromptTarget) -> Map<String, Value> {
    target
        .parameters
        .iter()
        .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
        .collect()
}

/// Check the model's `arguments` (a JSON string as OpenAI sends it, or an object) against
/// the target's parameters; the arguments to send, defaults filled in.
pub(crate) fn validate(target: &PromptTarget, raw: &Value) -> Result<Map<String, Value>, ArgError> {
    let given = match raw {
        Value::Null => Map::new(),
        Value::String(s) if s.trim().is_empty() => Map::new(),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(ArgError::Invalid(format!(
                    "arguments must be a JSON object, not {}",
                    kind(&other)
                )));
            }
            Err(e) => {
                return Err(ArgError::Invalid(format!(
                    "arguments are not valid JSON: {e}"
                )));
            }
        },
        Value::Object(m) => m.clone(),
        other => {
            return Err(ArgError::Invalid(format!(
                "arguments must be a JSON object, not {}",
                kind(other)
            )));
        }
    };
    let mut out = Map::new();
    let mut missing = Vec::new();
    for p in &target.parameters {
        match given.get(&p.name).filter(|v| !v.is_null()) {
            Some(v) => {
                let v = coerce(p, v)?;
                if !p.enum_values.is_empty() && !p.enum_values.iter().any(|e| same(e, &v)) {
                    return Err(ArgError::Invalid(format!(
                        "`{}` is {v}, not one of {}",
                        p.name,
                        Value::Array(p.enum_values.clone())
                    )));
                }
                out.insert(p.name.clone(), v);
            }
            None => match &p.default {
                Some(d) => {
                    out.insert(p.name.clone(), d.clone());
                }
                None if p.required => missing.push(p.name.clone()),
                None => {}
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(ArgError::Missing(missing))
    }
}

fn coerce(p: &PromptParameter, v: &Value) -> Result<Value, ArgError> {
    let wrong = || {
        ArgError::Invalid(format!(
            "`{}` should be {}, got {} {v}",
            p.name,
            type_name(p.ty),
            kind(v)
        ))
    };
    let out = match (p.ty, v) {
        (ParamType::String, Value::String(_)) => v.clone(),
        (ParamType::String, Value::Number(n)) => Value::String(n.to_string()),
        (ParamType::String, Value::Bool(b)) => Value::String(b.to_string()),
        (ParamType::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => v.clone(),
        (ParamType::Int, Value::Number(n)) => {
            let f = n.as_f64().ok_or_else(wrong)?;
            if f.fract() != 0.0 || f.abs() > 9.0e15 {
                return Err(wrong());
            }
            // In range and integral: the conversion is exact.
            Value::from(f as i64)
        }
        (ParamType::Int, Value::String(s)) => {
            Value::from(s.trim().parse::<i64>().map_err(|_| wrong())?)
        }
        (ParamType::Float, Value::Number(_)) => v.clone(),
        (ParamType::Float, Value::String(s)) => {
            let f = s.trim().parse::<f64>().map_err(|_| wrong())?;
            Value::Number(Number::from_f64(f).ok_or_else(wrong)?)
        }
        (ParamType::Bool, Value::Bool(_)) => v.clone(),
        (ParamType::Bool, Value::String(s)) => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(wrong()),
        },
        (ParamType::List, Value::Array(_)) | (ParamType::Dict, Value::Object(_)) => v.clone(),
        _ => return Err(wrong()),
    };
    Ok(out)
}

/// Enum membership: equal JSON, or equal numbers (`3` and `3.0`).
fn same(a: &Value, b: &Value) -> bool {
    a == b
        || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if a.is_number() && b.is_number() && x == y)
}

fn type_name(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "a string",
        ParamType::Int => "an integer",
        ParamType::Float => "a number",
        ParamType::Bool => "a boolean",
        ParamType::List => "a list",
        ParamType::Dict => "an object",
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plano_config::{HttpMethod, PromptTargetEndpoint};

    fn param(name: &str, ty: ParamType, required: bool) -> PromptParameter {
        PromptParameter {
            name: name.into(),
            description: None,
            required,
            ty,
            format: None,
            enum_values: vec![],
            default: None,
        }
    }

    fn target(parameters: Vec<PromptParameter>) -> PromptTarget {
        PromptTarget {
            name: "t".into(),
            description: "d".into(),
            parameters,
            endpoint: PromptTargetEndpoint {
                name: "e".into(),
                path: "/".into(),
                method: HttpMethod::Post,
                http_headers: vec![],
            },
            system_prompt: None,
            auto_llm_dispatch_on_response: true,
            default: false,
        }
    }

    fn args(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn types_are_checked_and_lenient_spellings_converted() {
        let t = target(vec![
            param("s", ParamType::String, true),
            param("i", ParamType::Int, true),
            param("f", ParamType::Float, true),
            param("b", ParamType::Bool, true),
            param("l", ParamType::List, true),
            param("d", ParamType::Dict, true),
        ]);
        let ok = validate(
            &t,
            &args(r#"{"s": 94107, "i": "3", "f": "2.5", "b": "true", "l": [1], "d": {"k": 1}, "extra": 1}"#),
        )
        .unwrap();
        assert_eq!(
            Value::Object(ok),
            json!({"s": "94107", "i": 3, "f": 2.5, "b": true, "l": [1], "d": {"k": 1}})
        );
        let i = validate(
            &t,
            &args(r#"{"s":"x","i":4.0,"f":1,"b":false,"l":[],"d":{}}"#),
        )
        .unwrap();
        assert_eq!(i["i"], 4);
        for bad in [
            r#"{"s":"x","i":4.5,"f":1,"b":false,"l":[],"d":{}}"#,
            r#"{"s":"x","i":"four","f":1,"b":false,"l":[],"d":{}}"#,
            r#"{"s":"x","i":1,"f":1,"b":"yes","l":[],"d":{}}"#,
            r#"{"s":"x","i":1,"f":1,"b":true,"l":"a,b","d":{}}"#,
            r#"{"s":["x"],"i":1,"f":1,"b":true,"l":[],"d":{}}"#,
        ] {
            assert!(
                matches!(validate(&t, &args(bad)), Err(ArgError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn required_defaults_and_enums() {
        let mut unit = param("unit", ParamType::String, false);
        unit.enum_values = vec![json!("c"), json!("f")];
        unit.default = Some(json!("c"));
        let mut days = param("days", ParamType::Int, true);
        days.enum_values = vec![json!(1), json!(3)];
        let t = target(vec![param("city", ParamType::String, true), days, unit]);
        assert_eq!(
            validate(&t, &args("{}")),
            Err(ArgError::Missing(vec!["city".into(), "days".into()]))
        );
        assert_eq!(
            validate(&t, &args(r#"{"city": null, "days": 1}"#)),
            Err(ArgError::Missing(vec!["city".into()]))
        );
        let ok = validate(&t, &args(r#"{"city": "Oslo", "days": 3}"#)).unwrap();
        assert_eq!(ok["unit"], "c");
        assert!(matches!(
            validate(&t, &args(r#"{"city": "Oslo", "days": 2}"#)),
            Err(ArgError::Invalid(m)) if m.contains("days")
        ));
        assert!(matches!(
            validate(&t, &args(r#"{"city": "Oslo", "days": 1, "unit": "k"}"#)),
            Err(ArgError::Invalid(_))
        ));
        assert_eq!(defaults(&t).get("unit"), Some(&json!("c")));
    }

    #[test]
    fn arguments_must_be_a_json_object() {
        let t = target(vec![param("a", ParamType::String, false)]);
        assert!(matches!(
            validate(&t, &args("[1]")),
            Err(ArgError::Invalid(_))
        ));
        assert!(matches!(
            validate(&t, &args("{oops")),
            Err(ArgError::Invalid(_))
        ));
        assert!(matches!(validate(&t, &json!(5)), Err(ArgError::Invalid(_))));
        assert_eq!(validate(&t, &args("")), Ok(Map::new()));
        assert_eq!(validate(&t, &json!({"a": "x"})).unwrap()["a"], "x");
    }

    #[test]
    fn schema_of_a_parameter() {
        let mut p = param("loc", ParamType::String, true);
        p.description = Some("where".into());
        p.format = Some("City, State".into());
        p.enum_values = vec![json!("a")];
        p.default = Some(json!("a"));
        assert_eq!(
            schema(&p),
            json!({"type": "string", "description": "where (format: City, State)", "enum": ["a"], "default": "a"})
        );
    }
}
