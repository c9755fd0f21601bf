#!/usr/bin/env bash
# Check the Jenkinsfile without a Jenkins (none is on Maven Central or runnable here):
#   1. parse it with Groovy 2.4 (Maven Central, fetched once into var/lib/groovy-2.4):
#      a syntax error fails the compile, as it would fail the pipeline's load;
#   2. lint it with npm-groovy-lint 16 (npm registry, installed once into
#      var/lib/npm-groovy-lint), failing on warnings.
# tests/integration/test_ci_files.py runs this and checks the make targets it calls.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
file="${1:-$root/Jenkinsfile}"
groovy="$root/var/lib/groovy-2.4"
lint="$root/var/lib/npm-groovy-lint"
if ! ls "$groovy"/groovy-all-2.4.*.jar >/dev/null 2>&1; then
    mvn -q -B -f "$root/ops/ci/pom.xml" dependency:copy-dependencies -DoutputDirectory="$groovy"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$file" "$work/Jenkinsfile.groovy"
java -cp "$groovy/*" org.codehaus.groovy.tools.FileSystemCompiler -d "$work/classes" \
    "$work/Jenkinsfile.groovy"
echo "groovy 2.4: $file parses"
if [ ! -x "$lint/node_modules/.bin/npm-groovy-lint" ]; then
    npm install --prefix "$lint" --no-audit --no-fund --silent npm-groovy-lint@16
fi
# --noserver: no CodeNarc server left running in the background after the lint
"$lint/node_modules/.bin/npm-groovy-lint" --noserver --failon warning --output txt "$file"
