# Interlock. `make run` starts the server; `make test` runs every test.
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 30s
BENCHTIME ?= 1s

.PHONY: run build test lint bench fuzz clean ui

run: ## Start interlock serve with an embedded NATS server storing under ./.interlock
	$(GO) run ./cmd/interlock serve

build:
	$(GO) build -o bin/interlock ./cmd/interlock

test: ## The whole suite, race detector on, fuzz seed corpora included
	@bash .ci/test-deps
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

bench: ## Benchmarks recorded in docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 3 ./events/ ./projections/ ./internal/command/ ./targeting/ ./local/ ./guard/...

fuzz: ## Each fuzz target for FUZZTIME
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

UI     := internal/dashboard/ui

ui: ## Install the dashboard's pinned npm packages and copy their dist files into the embedded folder
	cd $(UI) && npm ci --ignore-scripts --no-audit --no-fund
	grep -v '^#' $(UI)/vendor.txt | while read -r src dst; do \
	  mkdir -p "$$(dirname internal/dashboard/$$dst)" && cp "$(UI)/node_modules/$$src" "internal/dashboard/$$dst"; \
	done

clean:
	rm -rf bin .interlock
