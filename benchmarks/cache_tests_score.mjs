// Scores raw cache-tests results with the suite's own determineTestResult, so counts match
// cache-tests.fyi. Imports the suite's modules from its checkout; holds none of its code.
//
//   node cache_tests_score.mjs SUITE_DIR LABEL=RESULTS.json [LABEL=RESULTS.json ...]
//
// Prints JSON: {"tests": [{id, name, suite, kind, depends_on}],
//               "results": {LABEL: {test id: category}}}
// where category is a key of the suite's resultTypes (pass, fail, optional_fail, yes, no,
// setup_fail, harness_fail, dependency_fail, retry, untested).
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, ...inputs] = process.argv.slice(2)
const suiteModule = rel => pathToFileURL(path.resolve(suiteDir, rel)).href
const { default: testSuites } = await import(suiteModule('tests/index.mjs'))
const { determineTestResult, resultTypes } = await import(suiteModule('test-engine/lib/results.mjs'))

// determineTestResult returns one of the resultTypes arrays itself: map it back to its name.
const categoryOf = new Map(Object.entries(resultTypes).map(([name, symbols]) => [symbols, name]))

const tests = []
for (const suite of testSuites) {
  for (const test of suite.tests) {
    tests.push({
      id: test.id,
      name: test.name,
      suite: suite.id,
      kind: test.kind || 'required',
      depends_on: test.depends_on || []
    })
  }
}

const results = {}
for (const input of inputs) {
  const at = input.indexOf('=')
  const label = input.slice(0, at)
  const raw = JSON.parse(fs.readFileSync(input.slice(at + 1), 'utf8'))
  results[label] = Object.fromEntries(
    tests.map(t => [t.id, categoryOf.get(determineTestResult(testSuites, t.id, raw))])
  )
}

process.stdout.write(JSON.stringify({ tests, results }))
