#!/usr/bin/env bash
# Removes what deploy.sh made: the domain mapping, the service, the keys secret, the IAM
# bindings (the run.invoker grants on private services among them) and the service account.
# Only what carries deploy.sh's mark (the label
# managed-by=vertex-proxy, or for the service account that text in its description) is
# deleted, and a domain mapping only if it routes to this service: anything else is skipped,
# with the reason. Vertex AI and the other APIs stay enabled. Anything already gone is skipped.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./teardown.sh [options]

  --project ID            [PROJECT]  (default: gcloud config)
  --region REGION         [REGION]   (default: us-central1)
  --service NAME          [SERVICE]  (default: vertex-proxy)
  --service-account NAME  [SERVICE_ACCOUNT] (default: the service name)
  --keys-secret NAME      the keys secret to delete, if deploy.sh made one [KEYS_SECRET]
  --domain DOMAIN         the domain mapping to delete [DOMAIN]
  --yes                   do not ask for confirmation
  -h, --help              this help
EOF
}

die() { printf 'teardown.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
skip() { printf '==> skipping %s\n' "$*"; }
LABEL_KEY=managed-by
LABEL_VALUE=vertex-proxy

PROJECT=${PROJECT:-}
REGION=${REGION:-us-central1}
SERVICE=${SERVICE:-vertex-proxy}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-}
KEYS_SECRET=${KEYS_SECRET:-}
DOMAIN=${DOMAIN:-}
YES=false

while [[ $# -gt 0 ]]; do
  flag=$1
  case $flag in
    -h|--help) usage; exit 0 ;;
    --yes|-y) YES=true; shift; continue ;;
    --*=*) value=${flag#*=}; flag=${flag%%=*}; shift ;;
    --*) [[ $# -ge 2 ]] || die "$flag needs a value"; value=$2; shift 2 ;;
    *) die "unknown argument: $flag (see --help)" ;;
  esac
  case $flag in
    --project) PROJECT=$value ;;
    --region) REGION=$value ;;
    --service) SERVICE=$value ;;
    --service-account) SERVICE_ACCOUNT=$value ;;
    --keys-secret) KEYS_SECRET=$value ;;
    --domain) DOMAIN=$value ;;
    *) die "unknown option: $flag (see --help)" ;;
  esac
done
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-$SERVICE}

command -v gcloud >/dev/null 2>&1 || die "gcloud is not installed: https://cloud.google.com/sdk/docs/install"
command -v jq >/dev/null 2>&1 || die "jq is not installed: use your package manager"
if [[ -z $PROJECT ]]; then
  PROJECT=$(gcloud config get-value project 2>/dev/null || true)
fi
[[ -n $PROJECT && $PROJECT != "(unset)" ]] || die "no project: pass --project ID, set PROJECT, or run 'gcloud config set project ID'."

SA_EMAIL="$SERVICE_ACCOUNT@$PROJECT.iam.gserviceaccount.com"
G=(--project="$PROJECT" --quiet)

# The service, and the record of the run.invoker grants deploy.sh made (INVOKER_OF on it),
# read before anything changes. Each recorded name must be a Cloud Run service name, by
# deploy.sh's --invoker-of rule: a record that holds anything else was edited by hand, and
# cannot be trusted to say which grants are deploy.sh's.
service=$(gcloud run services describe --region="$REGION" --format=json "${G[@]}" -- "$SERVICE" 2>/dev/null || true)
invokees=()
if [[ -n $service ]]; then
  record=$(jq -r '.spec.template.spec.containers[0].env // [] | map(select(.name == "INVOKER_OF"))[0].value // empty' <<<"$service")
  IFS=, read -r -a recorded <<<"$record"
  for name in "${recorded[@]}"; do
    [[ -n $name ]] || continue
    [[ $name =~ ^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$ ]] || die "the INVOKER_OF record on $SERVICE holds '$name', which is not a Cloud Run service name: the record was edited by hand, so it cannot say which run.invoker grants deploy.sh made; nothing was changed. Set it to those services (gcloud run services update $SERVICE --region=$REGION --update-env-vars=INVOKER_OF=NAME,...) or remove the grants by hand, then run teardown.sh again."
    invokees+=("$name")
  done
fi

cat <<EOF
This deletes, in project $PROJECT:
  ${DOMAIN:+domain mapping  $DOMAIN
  }service          $SERVICE (region $REGION)
  ${KEYS_SECRET:+secret           $KEYS_SECRET
  }IAM binding      roles/aiplatform.user for $SA_EMAIL
  IAM bindings     roles/run.invoker for $SA_EMAIL on the services deploy.sh
                   granted it (--invoker-of, as recorded on $SERVICE)
  service account  $SA_EMAIL
The APIs stay enabled.
EOF
if [[ $YES != true ]]; then
  [[ -t 0 ]] || die "not a terminal: pass --yes to confirm."
  read -r -p "Type the service name ($SERVICE) to confirm: " answer
  [[ $answer == "$SERVICE" ]] || die "not confirmed; nothing was deleted."
fi

# Each step checks first, so a second run, or a half-made deployment, is fine.
if [[ -n $DOMAIN ]] && mapping=$(gcloud beta run domain-mappings describe --domain="$DOMAIN" --region="$REGION" --format=json "${G[@]}" 2>/dev/null); then
  route=$(jq -r '.spec.routeName // empty' <<<"$mapping")
  if [[ $route == "$SERVICE" ]]; then
    say "deleting domain mapping $DOMAIN"
    gcloud beta run domain-mappings delete --domain="$DOMAIN" --region="$REGION" "${G[@]}"
  else
    skip "domain mapping $DOMAIN: it routes to ${route:-another service}, not $SERVICE"
  fi
fi
if [[ -n $service ]]; then
  if [[ $(jq -r --arg k "$LABEL_KEY" '.metadata.labels[$k] // empty' <<<"$service") == "$LABEL_VALUE" ]]; then
    # Exactly the grants deploy.sh recorded making, read (and checked) above, before the
    # record goes with the service.
    for name in "${invokees[@]}"; do
      members=$(gcloud run services get-iam-policy --region="$REGION" --flatten='bindings[].members' \
        --filter='bindings.role:roles/run.invoker' --format='value(bindings.members)' "${G[@]}" -- "$name" 2>/dev/null || true)
      if grep -qx "serviceAccount:$SA_EMAIL" <<<"$members"; then
        say "removing roles/run.invoker on $name from $SA_EMAIL"
        gcloud run services remove-iam-policy-binding --region="$REGION" \
          --member="serviceAccount:$SA_EMAIL" --role=roles/run.invoker "${G[@]}" -- "$name" >/dev/null
      else
        skip "roles/run.invoker on $name: $SA_EMAIL no longer has it, or $name is gone"
      fi
    done
    say "deleting service $SERVICE"
    gcloud run services delete --region="$REGION" "${G[@]}" -- "$SERVICE"
  else
    skip "service $SERVICE: it has no label $LABEL_KEY=$LABEL_VALUE, so deploy.sh did not make it"
  fi
fi
if [[ -n $KEYS_SECRET ]] && secret=$(gcloud secrets describe --format=json "${G[@]}" -- "$KEYS_SECRET" 2>/dev/null); then
  if [[ $(jq -r --arg k "$LABEL_KEY" '.labels[$k] // empty' <<<"$secret") == "$LABEL_VALUE" ]]; then
    say "deleting secret $KEYS_SECRET (its IAM binding goes with it)"
    gcloud secrets delete "${G[@]}" -- "$KEYS_SECRET"
  else
    skip "secret $KEYS_SECRET: it has no label $LABEL_KEY=$LABEL_VALUE, so it may be shared; remove $SA_EMAIL's access to it by hand if you want"
  fi
fi
if description=$(gcloud iam service-accounts describe --format='value(description)' "${G[@]}" -- "$SA_EMAIL" 2>/dev/null); then
  if [[ $description == "$LABEL_KEY=$LABEL_VALUE"* ]]; then
    roles=$(gcloud projects get-iam-policy --flatten='bindings[].members' \
      --filter="bindings.members:serviceAccount:$SA_EMAIL" --format='value(bindings.role)' -- "$PROJECT" 2>/dev/null || true)
    if grep -qx roles/aiplatform.user <<<"$roles"; then
      say "removing roles/aiplatform.user from $SA_EMAIL"
      gcloud projects remove-iam-policy-binding --member="serviceAccount:$SA_EMAIL" \
        --role=roles/aiplatform.user --condition=None "${G[@]}" -- "$PROJECT" >/dev/null
    fi
    say "deleting service account $SA_EMAIL"
    gcloud iam service-accounts delete "${G[@]}" -- "$SA_EMAIL"
  else
    skip "service account $SA_EMAIL and its roles/aiplatform.user binding: the account existed before deploy.sh (its description lacks $LABEL_KEY=$LABEL_VALUE)"
  fi
fi
say "done. Source images built by Cloud Build remain in Artifact Registry (cloud-run-source-deploy); delete them there if you no longer need them."
