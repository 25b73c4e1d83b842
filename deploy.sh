#!/usr/bin/env bash
# Deploys vertex-proxy to Cloud Run in one go, or rotates its keys.
#
#   ./deploy.sh [options]        enable APIs, create the service account, grant it Vertex,
#                                deploy from source, map the domain, smoke-test
#   ./deploy.sh keys [options]   push the keys file again (as SHA-256 hashes) and nothing else
#
# Every option can also come from the environment variable in brackets. Run with --help for
# the list. Plaintext keys never leave this machine: the service gets SHA-256 hashes only.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [keys] [options]

  --project ID            Google Cloud project        [PROJECT]  (default: gcloud config)
  --region REGION         Cloud Run region            [REGION]   (default: us-central1)
  --service NAME          Cloud Run service name      [SERVICE]  (default: vertex-proxy)
  --service-account NAME  service account name        [SERVICE_ACCOUNT] (default: the service name)
  --location LOC          Vertex location             [VERTEX_LOCATION] (default: global)
  --aliases JSON          MODEL_ALIASES_JSON          [MODEL_ALIASES_JSON] (default: the proxy's)
  --keys-file FILE        your plaintext keys         [KEYS_FILE] (default: api-keys.json)
  --keys-secret NAME      keep the keys in this Secret Manager secret, mounted as a file
                                                      [KEYS_SECRET]
  --domain DOMAIN         map this custom domain      [DOMAIN]
  --invoker-of SVC[,SVC]  let the proxy call these private Cloud Run services (roles/run.invoker
                          on each, in --region), for aliases with an "upstream" [INVOKER_OF]
                          (given, the list is exact: grants it made for services no longer
                          listed are removed; not given, the grants stay as they are)
  --max-instances N       [MAX_INSTANCES] (default: 4)
  --concurrency N         [CONCURRENCY] (default: 250)
  --memory SIZE           [MEMORY] (default: 256Mi)
  -h, --help              this help
EOF
}

die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
warn() { printf 'deploy.sh: warning: %s\n' "$*" >&2; }

# The source to build and the local binary come from beside this script, wherever it is run
# from; the keys file is the caller's, relative to where they stand.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

COMMAND=deploy
if [[ ${1:-} == keys ]]; then COMMAND=keys; shift; fi

PROJECT=${PROJECT:-}
REGION=${REGION:-us-central1}
SERVICE=${SERVICE:-vertex-proxy}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-}
VERTEX_LOCATION=${VERTEX_LOCATION:-global}
MODEL_ALIASES_JSON=${MODEL_ALIASES_JSON:-}
KEYS_FILE=${KEYS_FILE:-api-keys.json}
KEYS_SECRET=${KEYS_SECRET:-}
DOMAIN=${DOMAIN:-}
# Unset means "leave the grants alone"; set, even empty, means "exactly these".
INVOKER_GIVEN=${INVOKER_OF+yes}
INVOKER_OF=${INVOKER_OF:-}
MAX_INSTANCES=${MAX_INSTANCES:-4}
CONCURRENCY=${CONCURRENCY:-250}
MEMORY=${MEMORY:-256Mi}

while [[ $# -gt 0 ]]; do
  flag=$1
  case $flag in
    -h|--help) usage; exit 0 ;;
    --*=*) value=${flag#*=}; flag=${flag%%=*}; shift ;;
    --*) [[ $# -ge 2 ]] || die "$flag needs a value"; value=$2; shift 2 ;;
    *) die "unknown argument: $flag (see --help)" ;;
  esac
  case $flag in
    --project) PROJECT=$value ;;
    --region) REGION=$value ;;
    --service) SERVICE=$value ;;
    --service-account) SERVICE_ACCOUNT=$value ;;
    --location) VERTEX_LOCATION=$value ;;
    --aliases) MODEL_ALIASES_JSON=$value ;;
    --keys-file) KEYS_FILE=$value ;;
    --keys-secret) KEYS_SECRET=$value ;;
    --domain) DOMAIN=$value ;;
    --invoker-of) INVOKER_OF=$value; INVOKER_GIVEN=yes ;;
    --max-instances) MAX_INSTANCES=$value ;;
    --concurrency) CONCURRENCY=$value ;;
    --memory) MEMORY=$value ;;
    *) die "unknown option: $flag (see --help)" ;;
  esac
done
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-$SERVICE}

# --- 1. Pre-flight: everything is checked before anything is changed. ---------------------
missing=()
for tool in gcloud jq sha256sum curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || die "missing tools: ${missing[*]}. Install them (gcloud: https://cloud.google.com/sdk/docs/install; jq, sha256sum, curl: your package manager) and run again."

account=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null | head -n 1)
[[ -n $account ]] || die "no active gcloud account: run 'gcloud auth login' first."
if [[ -z $PROJECT ]]; then
  PROJECT=$(gcloud config get-value project 2>/dev/null || true)
fi
[[ -n $PROJECT && $PROJECT != "(unset)" ]] || die "no project: pass --project ID, set PROJECT, or run 'gcloud config set project ID'."
[[ -f $KEYS_FILE ]] || die "keys file '$KEYS_FILE' not found: copy api-keys.example.json to api-keys.json and put real keys in it (vertex-proxy keygen makes them), or pass --keys-file."
# SECURITY: plaintext keys; only their owner should read them.
if [[ -n $(find "$KEYS_FILE" -maxdepth 0 \( -perm -040 -o -perm -004 \) 2>/dev/null) ]]; then
  warn "$KEYS_FILE can be read by your group or by others: it holds plaintext keys; run chmod 600 $KEYS_FILE"
fi

# The keys file with every plaintext "key" replaced by its "key_sha256". Keys are read from the
# file and hashed here; they are never put on a command line.
hash_keys() {
  jq -e 'type == "array"' "$KEYS_FILE" >/dev/null 2>&1 || die "$KEYS_FILE must be a JSON array of key entries (see api-keys.example.json)."
  local hashed count i key digest
  hashed=$(jq -c '.' "$KEYS_FILE")
  count=$(jq 'length' <<<"$hashed")
  for ((i = 0; i < count; i++)); do
    key=$(jq -r --argjson i "$i" '.[$i].key // empty' <<<"$hashed")
    [[ -n $key ]] || continue
    digest=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
    hashed=$(jq -c --argjson i "$i" --arg digest "$digest" '.[$i] |= (del(.key) + {key_sha256: $digest})' <<<"$hashed")
  done
  printf '%s' "$hashed"
}
KEYS_HASHED=$(hash_keys)

# The private services to invoke, one per line; each must be a Cloud Run service name.
invokees=()
if [[ -n $INVOKER_GIVEN ]]; then
  IFS=, read -r -a listed <<<"$INVOKER_OF"
  for name in "${listed[@]}"; do
    name=${name// /}
    [[ -n $name ]] || continue
    [[ $name =~ ^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$ ]] || die "--invoker-of: '$name' is not a Cloud Run service name (lowercase letters, digits and hyphens, at most 49)."
    invokees+=("$name")
  done
fi

# gcloud's alternate-delimiter syntax, with a delimiter that appears in no value.
delimiter_for() {
  local d
  for d in '@@' '##' '~~' '%%' '||' '^^' ';;'; do
    if [[ $* != *"$d"* ]]; then printf '%s' "$d"; return; fi
  done
  die "cannot find a delimiter for the environment variables"
}

SA_EMAIL="$SERVICE_ACCOUNT@$PROJECT.iam.gserviceaccount.com"
# What this script creates carries this label (the service, the secret) or, for the service
# account, which takes no labels, this text in its description; teardown.sh deletes only
# what does.
LABEL=managed-by=vertex-proxy
SECRET_PATH=/secrets/api-keys.json
G=(--project="$PROJECT" --quiet)

cat <<EOF
vertex-proxy $COMMAND
  project          $PROJECT   (account $account)
  region           $REGION
  service          $SERVICE
  service account  $SA_EMAIL
  Vertex location  $VERTEX_LOCATION
  model aliases    ${MODEL_ALIASES_JSON:-the proxy defaults}
  keys file        $KEYS_FILE ($(jq 'length' <<<"$KEYS_HASHED") entries, sent as SHA-256 hashes)
  keys secret      ${KEYS_SECRET:-none, keys go in the service environment}
  domain           ${DOMAIN:-none}
  invoker of       $(if [[ -z $INVOKER_GIVEN ]]; then echo "unchanged"; elif [[ ${#invokees[@]} -eq 0 ]]; then echo "none"; else echo "${invokees[*]} (in $REGION)"; fi)
  max instances    $MAX_INSTANCES, concurrency $CONCURRENCY, memory $MEMORY
EOF

# The environment the service runs with (keys excepted; they depend on the mode).
service_env() {
  local -a vars=("GOOGLE_CLOUD_PROJECT=$PROJECT" "VERTEX_LOCATION=$VERTEX_LOCATION")
  [[ -z $MODEL_ALIASES_JSON ]] || vars+=("MODEL_ALIASES_JSON=$MODEL_ALIASES_JSON")
  if [[ -n $KEYS_SECRET ]]; then
    vars+=("API_KEYS_FILE=$SECRET_PATH")
  else
    vars+=("API_KEYS_JSON=$KEYS_HASHED")
  fi
  # deploy.sh's record of the run.invoker grants it made, for the next deploy and for
  # teardown.sh; the proxy ignores it.
  [[ -z $INVOKER_GIVEN ]] || vars+=("INVOKER_OF=$INVOKER_RECORD")
  printf '%s\n' "${vars[@]}"
}

# The services whose run.invoker grant an earlier deploy made (INVOKER_OF on the service).
recorded_invokees() {
  gcloud run services describe --region="$REGION" --format=json "${G[@]}" -- "$SERVICE" 2>/dev/null \
    | jq -r '.spec.template.spec.containers[0].env // [] | map(select(.name == "INVOKER_OF"))[0].value // empty' \
    | tr ',' '\n' | grep -v '^$' || true
}

# Whether the proxy's service account may invoke service $1 already. (Read whole first: a
# grep that stops early would fail gcloud's write, and the pipeline with it.)
is_invoker() {
  local members
  members=$(gcloud run services get-iam-policy --region="$REGION" --flatten='bindings[].members' \
    --filter='bindings.role:roles/run.invoker' --format='value(bindings.members)' "${G[@]}" -- "$1")
  grep -qx "serviceAccount:$SA_EMAIL" <<<"$members"
}

env_flag() {
  local -a vars
  mapfile -t vars < <(service_env)
  local d
  d=$(delimiter_for "${vars[@]}")
  # Joined by hand: the delimiter must never be part of a printf format (%% would print %).
  local joined="" var
  for var in "${vars[@]}"; do joined+="$var$d"; done
  printf '^%s^%s' "$d" "${joined%"$d"}"
}

# Catches configuration errors before anything is built, when a local binary is at hand.
preflight_check() {
  local bin=""
  if [[ -x $HERE/target/release/vertex-proxy ]]; then bin=$HERE/target/release/vertex-proxy
  elif command -v vertex-proxy >/dev/null 2>&1; then bin=vertex-proxy
  else return 0; fi
  say "checking the configuration with $bin check"
  # The keys file itself, plaintext keys included, so short keys are caught too; it stays on
  # this machine.
  local -a env_args=("GOOGLE_CLOUD_PROJECT=$PROJECT" "VERTEX_LOCATION=$VERTEX_LOCATION" "API_KEYS_FILE=$KEYS_FILE")
  [[ -z $MODEL_ALIASES_JSON ]] || env_args+=("MODEL_ALIASES_JSON=$MODEL_ALIASES_JSON")
  env -u API_KEYS_JSON -u MODEL_ALIASES_JSON "${env_args[@]}" "$bin" check >/dev/null \
    || die "the configuration above is invalid (see the errors from vertex-proxy check); nothing was changed."
}

ensure_secret_version() {
  if ! gcloud secrets describe "${G[@]}" -- "$KEYS_SECRET" >/dev/null 2>&1; then
    say "creating secret $KEYS_SECRET"
    gcloud secrets create --replication-policy=automatic --labels="$LABEL" "${G[@]}" -- "$KEYS_SECRET"
  fi
  local current
  current=$(gcloud secrets versions access latest --secret="$KEYS_SECRET" "${G[@]}" 2>/dev/null || true)
  if [[ $current == "$KEYS_HASHED" ]]; then
    say "secret $KEYS_SECRET already holds these keys"
  else
    say "adding a version to secret $KEYS_SECRET"
    printf '%s' "$KEYS_HASHED" | gcloud secrets versions add --data-file=- "${G[@]}" -- "$KEYS_SECRET"
  fi
}

# The name of the secret the deployed service reads its keys from, if any.
mounted_secret() {
  gcloud run services describe --region="$REGION" --format=json "${G[@]}" -- "$SERVICE" \
    | jq -r --arg path "$SECRET_PATH" '
        .spec.template.spec as $spec
        | ($spec.containers[0].volumeMounts // [] | map(select(.mountPath == ($path | sub("/[^/]*$"; ""))))[0].name) as $volume
        | ($spec.volumes // [] | map(select(.name == $volume))[0].secret.secretName // empty)
        | sub("^projects/[^/]+/secrets/"; "")'
}

if [[ $COMMAND == keys ]]; then
  preflight_check
  if [[ -n $KEYS_SECRET ]]; then
    # A new version of a secret the service does not read would change nothing: the old keys
    # would stay valid.
    mounted=$(mounted_secret) || die "cannot describe service $SERVICE in $REGION: deploy it first."
    [[ $mounted == "$KEYS_SECRET" ]] || die "service $SERVICE does not read its keys from secret $KEYS_SECRET (it reads them from ${mounted:+secret $mounted}${mounted:-its environment, API_KEYS_JSON}); nothing was changed. Run ./deploy.sh --keys-secret $KEYS_SECRET to move the keys there, or drop --keys-secret."
    ensure_secret_version
    say "done: the service picks up the new keys at its next reload (KEYS_RELOAD_SECS, 30 s by default); no new revision."
  else
    mounted=$(mounted_secret) || die "cannot describe service $SERVICE in $REGION: deploy it first."
    [[ -z $mounted ]] || die "service $SERVICE reads its keys from secret $mounted, not its environment; nothing was changed. Pass --keys-secret $mounted."
    d=$(delimiter_for "$KEYS_HASHED")
    say "updating API_KEYS_JSON on $SERVICE (a new revision; nothing else changes)"
    gcloud run services update --region="$REGION" "${G[@]}" \
      --update-env-vars="^$d^API_KEYS_JSON=$KEYS_HASHED" -- "$SERVICE"
    say "done."
  fi
  exit 0
fi

preflight_check
# The grants an earlier deploy recorded making, checked as --invoker-of is: a record that
# holds anything but service names was edited by hand, and no grant is removed on its word.
previous=()
if [[ -n $INVOKER_GIVEN ]]; then
  mapfile -t previous < <(recorded_invokees)
  for name in "${previous[@]}"; do
    [[ $name =~ ^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$ ]] || die "the INVOKER_OF record on $SERVICE holds '$name', which is not a Cloud Run service name: the record was edited by hand, so it cannot say which run.invoker grants deploy.sh made; nothing was changed. Set it to those services (gcloud run services update $SERVICE --region=$REGION --update-env-vars=INVOKER_OF=NAME,...), then deploy again."
  done
fi
# The services to invoke must exist where the proxy runs: found now, before any change.
for name in "${invokees[@]}"; do
  gcloud run services describe --region="$REGION" --format='value(status.url)' "${G[@]}" -- "$name" >/dev/null 2>&1 \
    || die "--invoker-of: no Cloud Run service '$name' in $REGION of $PROJECT; nothing was changed."
done

# --- 2. APIs. ------------------------------------------------------------------------------
apis=(run.googleapis.com aiplatform.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com)
[[ -z $KEYS_SECRET ]] || apis+=(secretmanager.googleapis.com)
enabled=$(gcloud services list --enabled --format='value(config.name)' "${G[@]}")
to_enable=()
for api in "${apis[@]}"; do
  grep -qx "$api" <<<"$enabled" || to_enable+=("$api")
done
if [[ ${#to_enable[@]} -gt 0 ]]; then
  say "enabling ${to_enable[*]}"
  gcloud services enable "${G[@]}" -- "${to_enable[@]}"
fi

# --- 3. The service account, and its right to call Vertex. ---------------------------------
if ! gcloud iam service-accounts describe "${G[@]}" -- "$SA_EMAIL" >/dev/null 2>&1; then
  say "creating service account $SA_EMAIL"
  gcloud iam service-accounts create --display-name="vertex-proxy ($SERVICE)" \
    --description="$LABEL: the identity of Cloud Run service $SERVICE" "${G[@]}" -- "$SERVICE_ACCOUNT"
fi
roles=$(gcloud projects get-iam-policy --flatten='bindings[].members' \
  --filter="bindings.members:serviceAccount:$SA_EMAIL" --format='value(bindings.role)' -- "$PROJECT")
if ! grep -qx roles/aiplatform.user <<<"$roles"; then
  say "granting roles/aiplatform.user to $SA_EMAIL"
  gcloud projects add-iam-policy-binding --member="serviceAccount:$SA_EMAIL" \
    --role=roles/aiplatform.user --condition=None "${G[@]}" -- "$PROJECT" >/dev/null
fi

# --- 3b. The right to call the private services the aliases name. -----------------------------
# Only grants made here are recorded, so that teardown.sh removes exactly those: one that
# existed before stays, and stays unrecorded.
INVOKER_RECORD=""
if [[ -n $INVOKER_GIVEN ]]; then
  record=()
  for name in "${invokees[@]}"; do
    if printf '%s\n' "${previous[@]}" | grep -qx "$name"; then
      if ! is_invoker "$name"; then
        say "granting roles/run.invoker on $name to $SA_EMAIL again (it was removed)"
        gcloud run services add-iam-policy-binding --region="$REGION" \
          --member="serviceAccount:$SA_EMAIL" --role=roles/run.invoker "${G[@]}" -- "$name" >/dev/null
      fi
      record+=("$name")
    elif is_invoker "$name"; then
      say "$SA_EMAIL may already invoke $name (a grant deploy.sh did not make, and leaves alone)"
    else
      say "granting roles/run.invoker on $name to $SA_EMAIL"
      gcloud run services add-iam-policy-binding --region="$REGION" \
        --member="serviceAccount:$SA_EMAIL" --role=roles/run.invoker "${G[@]}" -- "$name" >/dev/null
      record+=("$name")
    fi
  done
  for name in "${previous[@]}"; do
    printf '%s\n' "${invokees[@]}" | grep -qx "$name" && continue
    say "removing roles/run.invoker on $name from $SA_EMAIL (no longer in --invoker-of)"
    gcloud run services remove-iam-policy-binding --region="$REGION" \
      --member="serviceAccount:$SA_EMAIL" --role=roles/run.invoker "${G[@]}" -- "$name" >/dev/null || true
  done
  INVOKER_RECORD=$(IFS=,; printf '%s' "${record[*]}")
fi

# --- 4. Keys in Secret Manager, when asked. --------------------------------------------------
secret_flags=()
if [[ -n $KEYS_SECRET ]]; then
  ensure_secret_version
  members=$(gcloud secrets get-iam-policy --flatten='bindings[].members' \
    --filter='bindings.role:roles/secretmanager.secretAccessor' --format='value(bindings.members)' "${G[@]}" -- "$KEYS_SECRET")
  if ! grep -qx "serviceAccount:$SA_EMAIL" <<<"$members"; then
    say "letting $SA_EMAIL read secret $KEYS_SECRET"
    gcloud secrets add-iam-policy-binding --member="serviceAccount:$SA_EMAIL" \
      --role=roles/secretmanager.secretAccessor "${G[@]}" -- "$KEYS_SECRET" >/dev/null
  fi
  secret_flags=(--update-secrets="$SECRET_PATH=$KEYS_SECRET:latest" --remove-env-vars=API_KEYS_JSON)
else
  secret_flags=(--remove-secrets="$SECRET_PATH" --remove-env-vars=API_KEYS_FILE)
fi

# --- 5. Deploy. -------------------------------------------------------------------------------
say "deploying $SERVICE from source (Cloud Build builds the Dockerfile)"
gcloud run deploy --source="$HERE" --region="$REGION" "${G[@]}" \
  --service-account="$SA_EMAIL" \
  --allow-unauthenticated \
  --min-instances=0 \
  --max-instances="$MAX_INSTANCES" \
  --concurrency="$CONCURRENCY" \
  --memory="$MEMORY" \
  --use-http2 \
  --cpu-boost \
  --timeout=3600 \
  --update-labels="$LABEL" \
  --update-env-vars="$(env_flag)" \
  "${secret_flags[@]}" \
  -- "$SERVICE"

URL=$(gcloud run services describe --region="$REGION" --format='value(status.url)' "${G[@]}" -- "$SERVICE")
[[ -n $URL ]] || die "deployed, but Cloud Run reported no URL for $SERVICE"

# --- 6. Custom domain. ------------------------------------------------------------------------
if [[ -n $DOMAIN ]]; then
  if ! gcloud beta run domain-mappings describe --domain="$DOMAIN" --region="$REGION" "${G[@]}" >/dev/null 2>&1; then
    say "mapping $DOMAIN to $SERVICE"
    gcloud beta run domain-mappings create --service="$SERVICE" --domain="$DOMAIN" --region="$REGION" "${G[@]}" >/dev/null
  fi
  say "DNS records to set for $DOMAIN (the certificate follows about 15 minutes after they resolve):"
  gcloud beta run domain-mappings describe --domain="$DOMAIN" --region="$REGION" --format=json "${G[@]}" \
    | jq -r '.status.resourceRecords[]? | "    \(.name // "@")  \(.type)  \(.rrdata)"'
fi

# --- 7. Smoke test, with the first plaintext key of the keys file. --------------------------
# /health is /healthz under a name Cloud Run's front end does not claim: it reserves some
# paths ending in "z", and /healthz may never reach the container there.
say "smoke test: $URL/health"
curl -fsS --max-time 30 "$URL/health" >/dev/null || die "$URL/health did not answer 200"
first_key=$(jq -r '[.[] | select(.key and (.enabled != false))][0].key // empty' "$KEYS_FILE")
if [[ -n $first_key ]]; then
  say "smoke test: $URL/v1/models with the first key"
  # The key goes to curl on stdin, not on its command line.
  printf 'x-api-key: %s\n' "$first_key" | curl -fsS --max-time 30 -H @- "$URL/v1/models" >/dev/null \
    || die "$URL/v1/models refused the first key of $KEYS_FILE"
else
  say "no plaintext key in $KEYS_FILE: skipping the /v1/models smoke test"
fi

# --- 8. How to use it. ------------------------------------------------------------------------
BASE=$URL
[[ -z $DOMAIN ]] || BASE="https://$DOMAIN"
cat <<EOF

Deployed. Base URL for the OpenAI SDKs:

    $BASE/v1
${DOMAIN:+
(until the DNS records resolve, use $URL/v1)
}
The runbook, with snippets for curl, Python, Node, the Agents SDK and pi's
~/.pi/agent/models.json block, is at $BASE/docs.
Rotate keys: edit $KEYS_FILE, then ./deploy.sh keys${KEYS_SECRET:+ --keys-secret $KEYS_SECRET}
EOF
