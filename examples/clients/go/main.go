// A Go client of `ctxbudget serve`: plain net/http, no dependencies. A snippet to copy
// (this repository has no Go toolchain, so it is not built or tested here).
//
//	go run main.go http://127.0.0.1:8181 support-assistant   (token: $CTXBUDGET_TOKEN)
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

type Candidate struct {
	SourceID       string  `json:"source_id"`
	Content        string  `json:"content"`
	RelevanceScore float64 `json:"relevance_score"`
}

type Decision struct {
	DecisionID string `json:"decision_id"`
	Context    string `json:"context"`
	Included   []struct {
		SourceID string `json:"source_id"`
		Tokens   int    `json:"tokens"`
	} `json:"included"`
}

type ErrorBody struct {
	Code    string `json:"code"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

func decide(base, product, token string, cands []Candidate) (*Decision, error) {
	body, _ := json.Marshal(map[string]any{"candidates": cands, "requested_by": "go-client"})
	req, err := http.NewRequest("POST", base+"/v1/decide/"+product, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return nil, fmt.Errorf("%d %s: %s: %s", resp.StatusCode, e.Code, e.Path, e.Message)
	}
	var d Decision
	return &d, json.NewDecoder(resp.Body).Decode(&d)
}

func main() {
	d, err := decide(os.Args[1], os.Args[2], os.Getenv("CTXBUDGET_TOKEN"), []Candidate{
		{"kb#refunds", "Refunds are accepted within 30 days.", 0.92},
		{"kb#shipping", "Shipping takes a week.", 0.41},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(d.DecisionID, len(d.Included), "included")
}
