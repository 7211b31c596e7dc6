package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"net/http"
	"time"
)

var page = template.Must(template.New("p").Parse(`<ul>{{range .}}<li>{{.Name}}</li>{{end}}</ul>`))

func routes(s *store) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/items", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			var it item
			if err := json.NewDecoder(r.Body).Decode(&it); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			sum := sha256.Sum256([]byte(it.Name))
			it.ID = hex.EncodeToString(sum[:8])
			it.Created = time.Now().UTC()
			s.put(it)
			w.WriteHeader(http.StatusCreated)
		default:
			_ = json.NewEncoder(w).Encode(s.list())
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_ = page.Execute(w, s.list())
	})
	return mux
}
