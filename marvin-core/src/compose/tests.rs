use super::*;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(text: &str) -> ComposeFile {
    ok_with(text, &[])
}

fn ok_with(text: &str, pairs: &[(&str, &str)]) -> ComposeFile {
    render(text, "docker-compose.yml", &vars(pairs))
        .unwrap_or_else(|e| panic!("expected the file to render, got:\n{e}"))
}

fn err(text: &str) -> String {
    err_with(text, &[])
}

fn err_with(text: &str, pairs: &[(&str, &str)]) -> String {
    match render(text, "docker-compose.yml", &vars(pairs)) {
        Ok(file) => panic!("expected an error, got {file:?}"),
        Err(e) => e.to_string(),
    }
}

fn service(text: &str) -> Service {
    let file = ok(&format!("services:\n  web:\n{text}"));
    file.services["web"].clone()
}

/// Interpolate one string with the given variables.
fn interp(text: &str, pairs: &[(&str, &str)]) -> Result<String, InterpolationError> {
    interpolate_str(text, &vars(pairs)).map(|i| i.value)
}

// ---- {{ VAR }} templating -------------------------------------------------

#[test]
fn template_fills_placeholders_with_or_without_spaces() {
    let v = vars(&[("CLUSTER_TYPE", "java-dev"), ("env.file", "envs/dev.env")]);
    assert_eq!(
        template(
            "build: {{ CLUSTER_TYPE }}\nenv_file: {{env.file}}\n",
            "f",
            &v
        )
        .unwrap(),
        "build: java-dev\nenv_file: envs/dev.env\n"
    );
}

#[test]
fn unknown_template_variable_names_file_line_column_and_suggests() {
    let v = vars(&[("CLUSTER", "a"), ("CONFIG_ENV_FILE", "b")]);
    let text = "services:\n  web:\n    image: x\n    build: {{ CLUSTR }}\n";
    assert_eq!(
        template(text, "docker-compose.yml", &v)
            .unwrap_err()
            .to_string(),
        "docker-compose.yml:4:12: unknown template variable `CLUSTR`; did you mean `CLUSTER`?"
    );
}

#[test]
fn unknown_template_variable_with_nothing_close_lists_the_known_ones() {
    let v = vars(&[("B", "1"), ("A", "2")]);
    assert_eq!(
        template("x: {{ NOPE_AT_ALL }}", "f.yml", &v)
            .unwrap_err()
            .to_string(),
        "f.yml:1:4: unknown template variable `NOPE_AT_ALL`; known: `A`, `B`"
    );
}

#[test]
fn text_that_is_not_a_placeholder_is_kept() {
    let v = vars(&[("X", "1")]);
    let text = "a: '{{.Name}} {{ json .State }} {{}} {{ X'\nb: {{{ X }}}";
    assert_eq!(
        template(text, "f", &v).unwrap(),
        "a: '{{.Name}} {{ json .State }} {{}} {{ X'\nb: {1}"
    );
}

#[test]
fn placeholders_in_yaml_comments_are_left_as_written() {
    let v = vars(&[("X", "1")]);
    let text = "# {{ NOPE }} at the top\nservices: # {{ X }}\n  web:\n    image: a:{{ X }}\n    environment:\n      # LDAP_FILTER: '(uid={{username}})'\n      #{{ ALSO_NOPE }}\n      A: 'x # {{ X }}'\n      B: \"y # {{ X }}\"\n      C: z#{{ X }}\n";
    assert_eq!(
        template(text, "f", &v).unwrap(),
        "# {{ NOPE }} at the top\nservices: # {{ X }}\n  web:\n    image: a:1\n    environment:\n      # LDAP_FILTER: '(uid={{username}})'\n      #{{ ALSO_NOPE }}\n      A: 'x # 1'\n      B: \"y # 1\"\n      C: z#1\n"
    );
}

#[test]
fn a_hash_inside_a_block_scalar_is_text_and_its_placeholders_are_filled() {
    let v = vars(&[("X", "1")]);
    let text = "services:\n  web:\n    image: a\n    command: |\n      echo # {{ X }}\n\n      echo {{ X }}\n    # {{ NOPE }}\n    labels:\n      - >-\n        a # {{ X }}\n";
    assert_eq!(
        template(text, "f", &v).unwrap(),
        "services:\n  web:\n    image: a\n    command: |\n      echo # 1\n\n      echo 1\n    # {{ NOPE }}\n    labels:\n      - >-\n        a # 1\n"
    );
    let e = template("a: |\n  x\nb: {{ NOPE }}\n", "f", &v).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("f:3:4: unknown template variable `NOPE`"),
        "{e}"
    );
}

#[test]
fn unknown_lower_case_names_are_another_tools_template_and_kept() {
    let v = vars(&[("X", "1"), ("env.file", "e")]);
    let text = "a: '(uid={{username}}) {{ .Name }} {{ json . }} {{ env.file }} {{ Name }}'";
    assert_eq!(
        template(text, "f", &v).unwrap(),
        "a: '(uid={{username}}) {{ .Name }} {{ json . }} e {{ Name }}'"
    );
    for upper in ["{{ NOPE }}", "{{NOPE_2}}", "{{ A.B }}"] {
        let e = template(&format!("a: {upper}"), "f", &v).unwrap_err();
        assert!(
            e.to_string().contains("unknown template variable"),
            "{upper}: {e}"
        );
    }
}

#[test]
fn a_commented_out_line_does_not_break_a_whole_file() {
    let text = "services:\n  web:\n    image: a\n    environment:\n      # LDAP_FILTER: '(uid={{username}})'\n      # OTHER: {{ NOT_SET }}\n      A: b\n";
    let file = render(text, "docker-compose.yml", &vars(&[])).unwrap();
    assert_eq!(file.services["web"].environment.len(), 1);
}

#[test]
fn quoted_braces_write_a_literal_placeholder() {
    assert_eq!(
        template("a: \"{{ '{{' }} NAME {{ '}}' }}\"", "f", &vars(&[])).unwrap(),
        "a: \"{{ NAME }}\""
    );
}

// ---- ${VAR} interpolation --------------------------------------------------

#[test]
fn plain_variables_are_replaced() {
    let v = [("A", "1"), ("B_2", "two")];
    assert_eq!(interp("$A-${B_2}/$A.x", &v).unwrap(), "1-two/1.x");
}

#[test]
fn unset_plain_variable_is_empty_and_reported() {
    let done = interpolate_str("x${NOPE}y$ALSO", &vars(&[])).unwrap();
    assert_eq!(done.value, "xy");
    assert_eq!(
        done.unset.into_iter().collect::<Vec<_>>(),
        vec!["ALSO".to_string(), "NOPE".to_string()]
    );
}

#[test]
fn colon_dash_default_applies_when_unset_or_empty() {
    assert_eq!(interp("${A:-d}", &[("A", "v")]).unwrap(), "v");
    assert_eq!(interp("${A:-d}", &[("A", "")]).unwrap(), "d");
    assert_eq!(interp("${A:-d}", &[]).unwrap(), "d");
}

#[test]
fn dash_default_applies_only_when_unset() {
    assert_eq!(interp("${A-d}", &[("A", "v")]).unwrap(), "v");
    assert_eq!(interp("${A-d}", &[("A", "")]).unwrap(), "");
    assert_eq!(interp("${A-d}", &[]).unwrap(), "d");
}

#[test]
fn colon_plus_replaces_when_set_and_not_empty() {
    assert_eq!(interp("${A:+r}", &[("A", "v")]).unwrap(), "r");
    assert_eq!(interp("${A:+r}", &[("A", "")]).unwrap(), "");
    assert_eq!(interp("${A:+r}", &[]).unwrap(), "");
}

#[test]
fn plus_replaces_when_set() {
    assert_eq!(interp("${A+r}", &[("A", "v")]).unwrap(), "r");
    assert_eq!(interp("${A+r}", &[("A", "")]).unwrap(), "r");
    assert_eq!(interp("${A+r}", &[]).unwrap(), "");
}

#[test]
fn colon_question_requires_a_non_empty_value() {
    assert_eq!(interp("${A:?need A}", &[("A", "v")]).unwrap(), "v");
    let required = InterpolationError::Required {
        name: "A".to_string(),
        message: "need A".to_string(),
    };
    assert_eq!(interp("${A:?need A}", &[("A", "")]).unwrap_err(), required);
    assert_eq!(interp("${A:?need A}", &[]).unwrap_err(), required);
}

#[test]
fn question_requires_the_variable_to_be_set() {
    assert_eq!(interp("${A?need A}", &[("A", "")]).unwrap(), "");
    assert_eq!(
        interp("${A?need A}", &[]).unwrap_err().to_string(),
        "variable `A` is required: need A"
    );
}

#[test]
fn double_dollar_is_a_literal_dollar() {
    assert_eq!(interp("$$HOME $${X} a$$", &[]).unwrap(), "$HOME ${X} a$");
}

#[test]
fn nested_defaults_are_evaluated_only_when_used() {
    assert_eq!(interp("${A:-${B}}", &[("B", "b")]).unwrap(), "b");
    assert_eq!(interp("${A:-${B:-${C}}}", &[("C", "c")]).unwrap(), "c");
    assert_eq!(interp("${A:-x${B}y}", &[("B", "b")]).unwrap(), "xby");
    // A is set: the default (which would fail) is never evaluated.
    assert_eq!(interp("${A:-${B:?boom}}", &[("A", "a")]).unwrap(), "a");
    let done = interpolate_str("${A:-${NOPE}}", &vars(&[("A", "a")])).unwrap();
    assert!(done.unset.is_empty());
}

#[test]
fn malformed_expressions_are_errors() {
    for bad in ["${A", "${}", "${A:x}", "$ alone", "end$", "${1A}"] {
        assert!(
            matches!(interp(bad, &[]), Err(InterpolationError::Syntax(_))),
            "{bad}"
        );
    }
}

#[test]
fn required_variable_error_names_the_key_path_and_message() {
    let text = "services:\n  web:\n    image: x\n    environment:\n      DB: ${DB_HOST:?db host missing}\n";
    assert_eq!(
        err(text),
        "docker-compose.yml:5:7: services.web.environment.DB: variable `DB_HOST` is required: db host missing; set `DB_HOST` in the environment's `vars` in marvin.yml, or in `.env` beside the compose file"
    );
}

#[test]
fn required_variable_without_message_reads_cleanly() {
    let text = "services:\n  web:\n    image: ${IMAGE?}\n";
    assert_eq!(
        err(text),
        "docker-compose.yml:3:5: services.web.image: variable `IMAGE` is required; set `IMAGE` in the environment's `vars` in marvin.yml, or in `.env` beside the compose file"
    );
}

#[test]
fn bad_interpolation_names_the_key_path() {
    let text = "services:\n  web:\n    image: x\n    command: [\"echo\", \"${OOPS\"]\n";
    assert_eq!(
        err(text),
        "docker-compose.yml:4:5: services.web.command[1]: invalid interpolation: `${` is not closed by `}` in `${OOPS`"
    );
}

#[test]
fn interpolation_applies_to_values_not_keys() {
    let file = ok_with(
        "services:\n  web:\n    image: \"${IMG}:${TAG:-latest}\"\n    labels:\n      $KEY: $VAL\n",
        &[("IMG", "nginx"), ("KEY", "k"), ("VAL", "v")],
    );
    let web = &file.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:latest"));
    assert_eq!(web.labels["$KEY"], "v");
}

#[test]
fn healthcheck_double_dollar_reaches_the_container_as_one_dollar() {
    let web = service(
        "    image: x\n    healthcheck:\n      test: ['CMD-SHELL', 'ping --password=\"$$(cat /p)\"']\n",
    );
    assert_eq!(
        web.healthcheck.unwrap().test,
        vec!["CMD-SHELL", "ping --password=\"$(cat /p)\""]
    );
}

// ---- YAML, merge keys, formats ---------------------------------------------

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    let e = err("services:\n  web:\n    image: [unclosed\n");
    assert!(e.starts_with("docker-compose.yml:4:1: "), "{e}");
}

#[test]
fn empty_file_is_an_error() {
    assert_eq!(err(""), "docker-compose.yml: the file is empty");
    assert_eq!(
        err("- a\n- b\n"),
        "docker-compose.yml: a compose file must be a mapping of keys (`services:` or service names)"
    );
}

#[test]
fn merge_keys_fill_in_what_the_service_does_not_override() {
    let file = ok(
        "x-java: &java\n  image: java:8\n  restart: always\n  environment: {A: '1'}\nservices:\n  api:\n    <<: *java\n    restart: on-failure\n",
    );
    let api = &file.services["api"];
    assert_eq!(api.image.as_deref(), Some("java:8"));
    assert_eq!(api.restart.as_deref(), Some("on-failure"));
    assert_eq!(api.environment["A"].as_deref(), Some("1"));
}

#[test]
fn chained_and_nested_merge_keys_are_applied() {
    let file = ok("x-base: &base\n  image: base\n  user: root\n\
x-java: &java\n  <<: *base\n  image: java\n\
x-env: &env\n  A: a\n  B: b\n\
services:\n  api:\n    <<: *java\n    environment:\n      <<: *env\n      B: override\n  \
multi:\n    <<: [*java, *base]\n");
    let api = &file.services["api"];
    assert_eq!(api.image.as_deref(), Some("java"));
    assert_eq!(api.user.as_deref(), Some("root"));
    assert_eq!(api.environment["A"].as_deref(), Some("a"));
    assert_eq!(api.environment["B"].as_deref(), Some("override"));
    // In a list of merged mappings, the first one wins.
    assert_eq!(file.services["multi"].image.as_deref(), Some("java"));
}

#[test]
fn merge_key_of_a_scalar_is_an_error_with_its_path() {
    assert_eq!(
        err("services:\n  web:\n    <<: 3\n"),
        "docker-compose.yml:3:5: services.web.<<: a merge key (`<<`) takes a mapping or a list of mappings (`*anchor`)"
    );
}

/// The talk's file: v1 layout, `{{ }}` placeholders, a service used as the
/// merge anchor, Marvin's `size`, Alauda's `8080/http` expose.
const TALK: &str = "\
configProvider: &java
  build: {{ CLUSTER_TYPE }}
  env_file: {{ CONFIG_ENV_FILE }}
  expose:
    - 8080/http
  size: XXS
baseSchedulerServer:
  build: ./baseSchedulerServer
  <<: *java
  links:
    - configProvider
baseSequenceServer:
  build: ./baseSequenceServer
  <<: *java
  links:
    - configProvider
";

#[test]
fn v1_file_from_the_talk_reads_every_top_level_key_as_a_service() {
    let file = ok_with(
        TALK,
        &[
            ("CLUSTER_TYPE", "java-dev"),
            ("CONFIG_ENV_FILE", "envs/dev.env"),
        ],
    );
    assert_eq!(file.format, Format::V1);
    assert_eq!(
        file.services.keys().collect::<Vec<_>>(),
        [
            "baseSchedulerServer",
            "baseSequenceServer",
            "configProvider"
        ]
    );
    let config = &file.services["configProvider"];
    assert_eq!(config.build.as_ref().unwrap().context, "java-dev");
    assert_eq!(config.env_file, vec!["envs/dev.env"]);
    let scheduler = &file.services["baseSchedulerServer"];
    assert_eq!(
        scheduler.build.as_ref().unwrap().context,
        "./baseSchedulerServer"
    );
    assert_eq!(scheduler.size, Some(Size::XXS));
    assert_eq!(scheduler.expose, vec!["8080/http"]);
    assert_eq!(scheduler.links, vec!["configProvider"]);
    assert_eq!(scheduler.env_file, vec!["envs/dev.env"]);
}

#[test]
fn v1_keeps_version_and_extensions_out_of_the_services() {
    let file = ok(
        "version: '1'\nx-common: {image: a}\nweb:\n  image: nginx\n  dockerfile: web.Dockerfile\n  build: web\n  net: host\n",
    );
    assert_eq!(file.services.keys().collect::<Vec<_>>(), ["web"]);
    let build = file.services["web"].build.clone().unwrap();
    assert_eq!(build.context, "web");
    assert_eq!(build.dockerfile, "web.Dockerfile");
}

#[test]
fn v1_errors_use_the_paths_as_written() {
    assert_eq!(
        err("web:\n  imgae: nginx\n"),
        "docker-compose.yml:2:3: web: unknown key `imgae`; did you mean `image`?"
    );
}

#[test]
fn extension_keys_are_allowed_anywhere_and_ignored() {
    let file = ok(
        "version: '3.8'\nx-top: {anything: [1, 2]}\nservices:\n  web:\n    image: a\n    x-note: hello\n    build:\n      context: .\n      x-cache: yes\nvolumes:\n  data:\n    x-backup: nightly\nx-last: 1\n",
    );
    assert_eq!(file.format, Format::Services);
    assert_eq!(file.services["web"].image.as_deref(), Some("a"));
}

#[test]
fn unquoted_numeric_version_is_accepted() {
    ok("version: 3.7\nservices:\n  web:\n    image: a\n");
}

// ---- schema validation ------------------------------------------------------

#[test]
fn unknown_service_key_suggests_the_schema_key() {
    assert_eq!(
        err("services:\n  web:\n    imgae: nginx\n"),
        "docker-compose.yml:3:5: services.web: unknown key `imgae`; did you mean `image`?"
    );
}

#[test]
fn unknown_nested_key_suggests_from_its_own_schema() {
    assert_eq!(
        err("services:\n  web:\n    build:\n      contxt: .\n"),
        "docker-compose.yml:4:7: services.web.build: unknown key `contxt`; did you mean `context`?"
    );
}

#[test]
fn unknown_top_level_key_is_rejected() {
    let e = err("services:\n  web:\n    image: a\nvolume:\n  data: {}\n");
    assert_eq!(
        e,
        "docker-compose.yml: unknown key `volume`; did you mean `volumes`?"
    );
}

#[test]
fn wrong_type_names_the_path_and_what_was_expected() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    ports:\n      - [80]\n"),
        "docker-compose.yml:5:7: services.web.ports[0]: expected a number, a string or a mapping, found a list"
    );
    assert_eq!(
        err("services:\n  web:\n    image: a\n    restart: [always]\n"),
        "docker-compose.yml:4:5: services.web.restart: expected a string, found a list"
    );
}

#[test]
fn wrong_type_inside_a_long_form_points_inside_it() {
    let e =
        err("services:\n  web:\n    image: a\n    ports:\n      - target: 80\n        mode: [x]\n");
    assert_eq!(
        e,
        "docker-compose.yml:6:9: services.web.ports[0].mode: expected a string, found a list"
    );
}

#[test]
fn every_problem_is_reported_one_per_line() {
    let e = err("services:\n  web:\n    imgae: a\n  db:\n    restart: [x]\n");
    assert_eq!(
        e,
        "docker-compose.yml:3:5: services.web: unknown key `imgae`; did you mean `image`?\n\
docker-compose.yml:5:5: services.db.restart: expected a string, found a list"
    );
}

// ---- the model: every field, short and long ---------------------------------

#[test]
fn build_string_form_is_the_context() {
    let build = service("    build: ./app\n").build.unwrap();
    assert_eq!(
        build,
        Build {
            context: "./app".to_string(),
            dockerfile: "Dockerfile".to_string(),
            args: BTreeMap::new(),
            target: None,
            platform: None,
        }
    );
}

#[test]
fn build_object_form_reads_every_field() {
    let build = service("    build:\n      context: app\n      dockerfile: ../docker/App.Dockerfile\n      args:\n        - VERSION=1.2\n        - EMPTY=\n      target: prod\n      platforms: [linux/arm64, linux/amd64]\n").build.unwrap();
    assert_eq!(build.context, "app");
    assert_eq!(build.dockerfile, "../docker/App.Dockerfile");
    assert_eq!(build.args, vars(&[("VERSION", "1.2"), ("EMPTY", "")]));
    assert_eq!(build.target.as_deref(), Some("prod"));
    assert_eq!(build.platform.as_deref(), Some("linux/arm64"));
}

#[test]
fn build_secrets_ssh_and_additional_contexts_are_refused_not_dropped() {
    let e = err(
        "services:\n  api:\n    build:\n      context: .\n      secrets: [npmrc]\nsecrets:\n  npmrc:\n    file: ./npmrc\n",
    );
    assert!(
        e.contains("docker-compose.yml")
            && e.contains("services.api.build.secrets")
            && e.contains("build secrets")
            && e.contains("Remove `secrets`"),
        "{e}"
    );
    let e = err("services:\n  api:\n    build:\n      context: .\n      ssh: [default]\n");
    assert!(e.contains("services.api.build.ssh"), "{e}");
    let e = err(
        "services:\n  api:\n    build:\n      context: .\n      additional_contexts:\n        lib: ../lib\n",
    );
    assert!(e.contains("services.api.build.additional_contexts"), "{e}");
}

#[test]
fn build_args_map_stringifies_and_valueless_args_come_from_the_variables() {
    let file = ok_with(
        "services:\n  web:\n    platform: linux/amd64\n    build:\n      args:\n        N: 3\n        F: 1.5\n        B: true\n        FROM_VARS:\n        MISSING:\n",
        &[("FROM_VARS", "v")],
    );
    let build = file.services["web"].build.clone().unwrap();
    assert_eq!(build.context, ".");
    assert_eq!(
        build.args,
        vars(&[("N", "3"), ("F", "1.5"), ("B", "true"), ("FROM_VARS", "v")])
    );
    assert_eq!(build.platform.as_deref(), Some("linux/amd64"));
}

#[test]
fn command_string_is_split_like_a_shell() {
    let web = service(
        "    image: a\n    command: sh -c 'echo \"hi there\"' \"a b\" c\\ d\n    entrypoint: [\"/bin/tini\", \"--\"]\n",
    );
    assert_eq!(
        web.command.unwrap(),
        vec!["sh", "-c", "echo \"hi there\"", "a b", "c d"]
    );
    assert_eq!(web.entrypoint.unwrap(), vec!["/bin/tini", "--"]);
}

#[test]
fn command_with_unclosed_quote_is_an_error_with_its_path() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    command: echo 'oops\n"),
        "docker-compose.yml:4:5: services.web.command: unclosed `'` in `echo 'oops`"
    );
}

#[test]
fn environment_list_and_map_forms_agree() {
    let list = service(
        "    image: a\n    environment:\n      - A=1\n      - B\n      - C=x=y\n      - D=\n",
    );
    let map = service(
        "    image: a\n    environment:\n      A: 1\n      B:\n      C: x=y\n      D: ''\n",
    );
    let expected: BTreeMap<String, Option<String>> = [
        ("A", Some("1")),
        ("B", None),
        ("C", Some("x=y")),
        ("D", Some("")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    assert_eq!(list.environment, expected);
    assert_eq!(map.environment, expected);
}

#[test]
fn environment_numbers_and_booleans_become_strings() {
    let web = service(
        "    image: a\n    environment:\n      N: 5432\n      F: 0.5\n      T: true\n      Y: yes\n",
    );
    assert_eq!(web.environment["N"].as_deref(), Some("5432"));
    assert_eq!(web.environment["F"].as_deref(), Some("0.5"));
    assert_eq!(web.environment["T"].as_deref(), Some("true"));
    assert_eq!(web.environment["Y"].as_deref(), Some("yes"));
}

#[test]
fn env_file_string_list_and_long_forms() {
    assert_eq!(
        service("    image: a\n    env_file: .env\n").env_file,
        vec![".env"]
    );
    assert_eq!(
        service("    image: a\n    env_file:\n      - a.env\n      - path: b.env\n        required: false\n").env_file,
        vec!["a.env", "b.env"]
    );
}

#[test]
fn ports_short_form_is_kept_and_long_form_is_shortened() {
    let web = service(
        "    image: a\n    ports:\n      - 80\n      - \"8080:80\"\n      - 127.0.0.1:53:53/udp\n      - target: 80\n        published: 8081\n      - target: 443\n        published: \"8443\"\n        protocol: tcp\n        host_ip: 0.0.0.0\n        mode: host\n      - target: 9000\n      - target: 53\n        host_ip: ::1\n        protocol: udp\n",
    );
    assert_eq!(
        web.ports,
        vec![
            "80",
            "8080:80",
            "127.0.0.1:53:53/udp",
            "8081:80",
            "0.0.0.0:8443:443/tcp",
            "9000",
            "[::1]::53/udp"
        ]
    );
}

#[test]
fn port_specs_read_into_mappings() {
    let m = |ip: Option<&str>, published: Option<&str>, target: u16, protocol: &str| PortMapping {
        host_ip: ip.map(str::to_string),
        published: published.map(str::to_string),
        target,
        protocol: protocol.to_string(),
    };
    assert_eq!(parse_port("80").unwrap(), vec![m(None, None, 80, "tcp")]);
    assert_eq!(
        parse_port("8080:80/udp").unwrap(),
        vec![m(None, Some("8080"), 80, "udp")]
    );
    assert_eq!(
        parse_port("127.0.0.1::80").unwrap(),
        vec![m(Some("127.0.0.1"), None, 80, "tcp")]
    );
    assert_eq!(
        parse_port("[::1]:8080:80").unwrap(),
        vec![m(Some("::1"), Some("8080"), 80, "tcp")]
    );
    assert_eq!(
        parse_port("8000-8001:80-81").unwrap(),
        vec![
            m(None, Some("8000"), 80, "tcp"),
            m(None, Some("8001"), 81, "tcp")
        ]
    );
    assert_eq!(
        parse_port("9000-9010:80").unwrap(),
        vec![m(None, Some("9000-9010"), 80, "tcp")]
    );
    assert_eq!(
        parse_port("8080:http").unwrap_err(),
        "port `8080:http` has no valid container port; write `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`, e.g. `8080:80`"
    );
    assert!(parse_port("80/icmp").is_err());
    assert!(parse_port("8000-8002:80-81").is_err());
}

#[test]
fn expose_links_and_networks_read_as_lists() {
    let file = ok(
        "services:\n  web:\n    image: a\n    expose: [3306, \"8080/tcp\"]\n    links: [db, \"cache:redis\"]\n    networks: [front, back]\n  db:\n    image: b\n    networks:\n      back:\n        aliases: [database]\n      front:\nnetworks:\n  front:\n  back:\n    driver: bridge\n",
    );
    let web = &file.services["web"];
    assert_eq!(web.expose, vec!["3306", "8080/tcp"]);
    assert_eq!(web.links, vec!["db", "cache:redis"]);
    assert_eq!(web.networks, vec!["front", "back"]);
    let mut db_networks = file.services["db"].networks.clone();
    db_networks.sort();
    assert_eq!(db_networks, vec!["back", "front"]);
    assert_eq!(file.networks["front"], serde_json::json!({}));
    assert_eq!(
        file.networks["back"],
        serde_json::json!({"driver": "bridge"})
    );
}

#[test]
fn depends_on_list_and_map_forms() {
    let file = ok(
        "services:\n  a:\n    image: a\n    depends_on: [b, c]\n  b:\n    image: b\n    depends_on:\n      c:\n        condition: service_healthy\n  c:\n    image: c\n",
    );
    let started = DependsOn {
        condition: "service_started".to_string(),
    };
    assert_eq!(file.services["a"].depends_on["b"], started);
    assert_eq!(file.services["a"].depends_on["c"], started);
    assert_eq!(
        file.services["b"].depends_on["c"].condition,
        "service_healthy"
    );
}

#[test]
fn healthcheck_string_list_and_none_forms() {
    let h = service("    image: a\n    healthcheck:\n      test: curl -f http://localhost\n      interval: 1m30s\n      timeout: 10s\n      start_period: 40s\n      retries: 3\n").healthcheck.unwrap();
    assert_eq!(
        h,
        Healthcheck {
            test: vec![
                "CMD-SHELL".to_string(),
                "curl -f http://localhost".to_string()
            ],
            interval: Some("1m30s".to_string()),
            timeout: Some("10s".to_string()),
            start_period: Some("40s".to_string()),
            retries: Some(3),
            disable: false,
        }
    );
    let list = service("    image: a\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n")
        .healthcheck
        .unwrap();
    assert_eq!(list.test, vec!["CMD", "true"]);
    assert!(
        service("    image: a\n    healthcheck:\n      test: [\"NONE\"]\n")
            .healthcheck
            .unwrap()
            .disable
    );
    assert!(
        service("    image: a\n    healthcheck:\n      disable: true\n")
            .healthcheck
            .unwrap()
            .disable
    );
}

#[test]
fn healthcheck_bad_duration_names_its_path() {
    let e = err(
        "services:\n  web:\n    image: a\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: soon\n",
    );
    assert!(
        e.starts_with("docker-compose.yml:6:7: services.web.healthcheck.interval: "),
        "{e}"
    );
}

#[test]
fn volumes_short_form_is_kept_and_long_form_is_shortened() {
    let web = service(
        "    image: a\n    volumes:\n      - ./src:/code:ro\n      - /anon\n      - type: bind\n        source: ./conf\n        target: /etc/conf\n        read_only: true\n      - type: volume\n        source: data\n        target: /data\n      - type: volume\n        target: /cache\n      - type: tmpfs\n        target: /tmp\n    tmpfs: /run\n",
    );
    assert_eq!(
        web.volumes,
        vec![
            "./src:/code:ro",
            "/anon",
            "./conf:/etc/conf:ro",
            "data:/data",
            "/cache"
        ]
    );
    assert_eq!(web.tmpfs, vec!["/run", "/tmp"]);
}

#[test]
fn labels_list_and_map_forms() {
    let list =
        service("    image: a\n    labels:\n      - com.example.a=1\n      - com.example.flag\n");
    let map =
        service("    image: a\n    labels:\n      com.example.a: 1\n      com.example.flag: ''\n");
    let expected = vars(&[("com.example.a", "1"), ("com.example.flag", "")]);
    assert_eq!(list.labels, expected);
    assert_eq!(map.labels, expected);
}

#[test]
fn simple_strings_are_read() {
    let web = service(
        "    image: nginx:1.25\n    restart: unless-stopped\n    working_dir: /app\n    user: \"1000:1000\"\n",
    );
    assert_eq!(web.image.as_deref(), Some("nginx:1.25"));
    assert_eq!(web.restart.as_deref(), Some("unless-stopped"));
    assert_eq!(web.working_dir.as_deref(), Some("/app"));
    assert_eq!(web.user.as_deref(), Some("1000:1000"));
}

#[test]
fn size_and_x_size_map_to_limits() {
    let web = service("    image: a\n    size: M\n");
    let size = web.size.unwrap();
    assert_eq!(size, Size::M);
    assert_eq!(size.cpus(), 1.0);
    assert_eq!(size.memory_bytes(), 2 * 1024 * 1024 * 1024);
    assert_eq!(
        service("    image: a\n    x-size: xxs\n").size,
        Some(Size::XXS)
    );
    let table: Vec<(f64, u64)> = Size::ALL
        .iter()
        .map(|s| (s.cpus(), s.memory_bytes() / (1024 * 1024)))
        .collect();
    assert_eq!(
        table,
        vec![
            (0.125, 256),
            (0.25, 512),
            (0.5, 1024),
            (1.0, 2048),
            (2.0, 4096),
            (4.0, 8192)
        ]
    );
}

#[test]
fn unknown_size_suggests_the_closest() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    size: XXL\n"),
        "docker-compose.yml:4:5: services.web.size: unknown size `XXL`; did you mean `XL` (or `XXS`)?"
    );
}

#[test]
fn replicas_come_from_deploy_or_scale() {
    assert_eq!(
        service("    image: a\n    deploy:\n      replicas: 3\n").replicas,
        Some(3)
    );
    assert_eq!(service("    image: a\n    scale: 2\n").replicas, Some(2));
    assert_eq!(service("    image: a\n").replicas, None);
}

#[test]
fn further_service_fields_are_read_and_the_rest_named_as_unapplied() {
    let file = ok(
        "services:\n  web:\n    image: a\n    container_name: web-1\n    hostname: h\n    stop_signal: SIGINT\n    stop_grace_period: 1m30s\n    cap_add: [NET_ADMIN]\n    logging:\n      driver: json-file\n    mem_limit: 256m\n    cpus: 0.5\n    size: S\n    oom_score_adj: 5\n    network_mode: \"service:db\"\n    secrets: [s]\nsecrets:\n  s: {file: ./s.txt}\n",
    );
    let web = &file.services["web"];
    assert_eq!(web.image.as_deref(), Some("a"));
    assert_eq!(web.options.hostname.as_deref(), Some("h"));
    assert_eq!(web.options.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(web.options.stop_timeout_s, Some(90));
    assert_eq!(web.options.cap_add, vec!["NET_ADMIN"]);
    assert_eq!(web.options.log_driver.as_deref(), Some("json-file"));
    assert_eq!(web.memory_limit, Some(256 * 1024 * 1024));
    assert_eq!(web.nano_cpus, Some(500_000_000));
    assert_eq!(
        web.unapplied,
        vec!["oom_score_adj", "network_mode: service:db"]
    );
    assert_eq!(
        file.warnings,
        vec![
            "docker-compose.yml: services.web.container_name: container_name `web-1` is ignored: Marvin names containers `<project>-<environment>-<service>` so that environments never collide"
        ]
    );
}

#[test]
fn rendering_runs_every_step() {
    let text = "services:\n  {{ NAME }}:\n    image: \"${REGISTRY:-local}/{{ NAME }}:${TAG:?set a tag}\"\n";
    let file = ok_with(text, &[("NAME", "api"), ("TAG", "7")]);
    assert_eq!(file.services["api"].image.as_deref(), Some("local/api:7"));
    assert!(file.warnings.is_empty());
}

#[test]
fn invalid_service_name_says_what_names_may_be() {
    assert_eq!(
        err("services:\n  my web:\n    image: a\n"),
        "docker-compose.yml:1:1: services: invalid name `my web`: it must match `^[a-zA-Z0-9._-]+$`"
    );
}

#[test]
fn pattern_mismatch_shows_the_pattern() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    container_name: x\n"),
        "docker-compose.yml:4:5: services.web.container_name: \"x\" does not match `[a-zA-Z0-9][a-zA-Z0-9_.-]+`"
    );
}

#[test]
fn service_without_image_or_build_is_an_error() {
    assert_eq!(
        err("services:\n  web:\n    restart: always\n"),
        "docker-compose.yml:2:3: services.web: a service needs `image` or `build`"
    );
    assert_eq!(
        err("java:\n  image: java\nshared: &s\n  restart: always\n"),
        "docker-compose.yml:3:1: shared: a service needs `image` or `build` (in this format every top-level key is a service; start shared blocks with `x-`)"
    );
}
