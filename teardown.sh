#!/usr/bin/env bash
# Removes what deploy.sh made: the domain mapping, the service, the keys secret, the IAM
# bindings and the service account. Vertex AI and the other APIs stay enabled. Anything
# already gone is skipped.
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
if [[ -z $PROJECT ]]; then
  PROJECT=$(gcloud config get-value project 2>/dev/null || true)
fi
[[ -n $PROJECT && $PROJECT != "(unset)" ]] || die "no project: pass --project ID, set PROJECT, or run 'gcloud config set project ID'."

SA_EMAIL="$SERVICE_ACCOUNT@$PROJECT.iam.gserviceaccount.com"
G=(--project="$PROJECT" --quiet)

cat <<EOF
This deletes, in project $PROJECT:
  ${DOMAIN:+domain mapping  $DOMAIN
  }service          $SERVICE (region $REGION)
  ${KEYS_SECRET:+secret           $KEYS_SECRET
  }IAM binding      roles/aiplatform.user for $SA_EMAIL
  service account  $SA_EMAIL
The APIs stay enabled.
EOF
if [[ $YES != true ]]; then
  [[ -t 0 ]] || die "not a terminal: pass --yes to confirm."
  read -r -p "Type the service name ($SERVICE) to confirm: " answer
  [[ $answer == "$SERVICE" ]] || die "not confirmed; nothing was deleted."
fi

# Each step checks first, so a second run, or a half-made deployment, is fine.
if [[ -n $DOMAIN ]] && gcloud beta run domain-mappings describe --domain="$DOMAIN" --region="$REGION" "${G[@]}" >/dev/null 2>&1; then
  say "deleting domain mapping $DOMAIN"
  gcloud beta run domain-mappings delete --domain="$DOMAIN" --region="$REGION" "${G[@]}"
fi
if gcloud run services describe "$SERVICE" --region="$REGION" "${G[@]}" >/dev/null 2>&1; then
  say "deleting service $SERVICE"
  gcloud run services delete "$SERVICE" --region="$REGION" "${G[@]}"
fi
if [[ -n $KEYS_SECRET ]] && gcloud secrets describe "$KEYS_SECRET" "${G[@]}" >/dev/null 2>&1; then
  say "deleting secret $KEYS_SECRET (its IAM binding goes with it)"
  gcloud secrets delete "$KEYS_SECRET" "${G[@]}"
fi
roles=$(gcloud projects get-iam-policy "$PROJECT" --flatten='bindings[].members' \
  --filter="bindings.members:serviceAccount:$SA_EMAIL" --format='value(bindings.role)' 2>/dev/null || true)
if grep -qx roles/aiplatform.user <<<"$roles"; then
  say "removing roles/aiplatform.user from $SA_EMAIL"
  gcloud projects remove-iam-policy-binding "$PROJECT" --member="serviceAccount:$SA_EMAIL" \
    --role=roles/aiplatform.user --condition=None "${G[@]}" >/dev/null
fi
if gcloud iam service-accounts describe "$SA_EMAIL" "${G[@]}" >/dev/null 2>&1; then
  say "deleting service account $SA_EMAIL"
  gcloud iam service-accounts delete "$SA_EMAIL" "${G[@]}"
fi
say "done. Source images built by Cloud Build remain in Artifact Registry (cloud-run-source-deploy); delete them there if you no longer need them."
