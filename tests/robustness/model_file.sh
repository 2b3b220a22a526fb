#!/usr/bin/env bash
# Fault and abuse suite, surface: imported models and their data (issue 17): `meshpipe train
# --model-file` with ONNX files that are damaged, hostile or not files at all, `--data` folders
# whose arrays lie, and `--metrics` pointed where it must not write. Every case must end with a
# message naming the problem, never hang, and read or write nothing outside its place.
# Usage: model_file.sh BIN_DIR [RESULTS_DIR]
source "$(dirname "$0")/lib.sh"
rb_init model_file "$1" "${2:-}"
GEN="$(cd "$(dirname "$0")" && pwd)/onnx_files.py"
export GEN

good() { /usr/bin/python3 "$GEN" good; }
hostile() { good && /usr/bin/python3 "$GEN" hostile; }
train() { "$MESHPIPE" train --steps 2 --optimizer sgd --lr 0.1 "$@"; }
export -f train

rb_case "a good file and its data train" 0 "done: loss" --setup good \
  -- train --model-file good.onnx --data data
rb_case "a good file without data: synthetic data cannot fill it" 2 \
  "synthetic data cannot fill input 'x'.*give the data" --setup good \
  -- train --model-file good.onnx
rb_case "random bytes" 2 "good.onnx|random.onnx" --setup hostile \
  -- train --model-file random.onnx --data data
rb_case "a truncated file" 2 "truncated" --setup hostile \
  -- train --model-file truncated.onnx --data data
rb_case "an op meshpipe does not import" 2 "node '/Cos' \(Cos\): op type 'Cos' is not imported" \
  --setup hostile -- train --model-file cos.onnx --data data
rb_case "an int64 initializer of 2^40 elements without data" 2 "sh" --setup hostile \
  -- train --model-file huge_int.onnx --data data
rb_case "an initializer whose byte count wraps" 2 "'w'" --setup hostile \
  -- train --model-file wrap.onnx --data data
rb_case "subgraphs nested 200 deep" 2 "nested more than 8 deep" --timeout 20 --setup hostile \
  -- train --model-file deep.onnx --data data
rb_case "an input of 2^80 elements" 2 "more than 2\^40 elements" --setup hostile \
  -- train --model-file big_input.onnx --data data
rb_case "the model file on /dev/zero" 2 "not a regular file" --timeout 20 \
  -- train --model-file /dev/zero
mkfifo_model() { mkfifo model.onnx; }
rb_case "the model file is a FIFO (nobody writes it)" 2 "not a regular file" --timeout 20 \
  --setup mkfifo_model -- train --model-file model.onnx
rb_case "the model file is a directory" 2 "not a regular file" \
  -- train --model-file keep
rb_case "an input named ../../guard/outside reads no file outside --data" 2 \
  "cannot name a data file" --setup hostile -- train --model-file climb.onnx --data data
rb_case "an array whose header claims 2^40 rows" 2 "data bytes, its header's shape needs" \
  --setup hostile -- train --model-file good.onnx --data liar
rb_case "integers for a float input" 2 "holds '<i8' but input 'x' is f32" --setup hostile \
  -- train --model-file good.onnx --data ints
fifo_data() { good && rm data/x.npy && mkfifo data/x.npy; }
rb_case "a data array that is a FIFO" 2 "FIFO, not a regular file" --timeout 20 \
  --setup fifo_data -- train --model-file good.onnx --data data
rb_case "--data naming a file that is not a token file for this model" 2 \
  "a token file feeds a language model" --setup good -- train --model-file good.onnx --data notes.txt
fifo_metrics() { good && mkfifo m.jsonl; }
rb_case "--metrics onto a FIFO" 2 "not a regular file" --timeout 20 --setup fifo_metrics \
  -- train --model-file good.onnx --data data --metrics m.jsonl
link_metrics() { good && ln -s keep/mine.txt m.jsonl; }
rb_case "--metrics onto a symbolic link to a file it must not touch" 2 "not a regular file" \
  --setup link_metrics -- train --model-file good.onnx --data data --metrics m.jsonl
rb_case "--metrics onto a directory" 2 "not a regular file" --setup good \
  -- train --model-file good.onnx --data data --metrics keep
rb_case "--loss cross-entropy on a model whose output is a scalar" 2 "" --setup good \
  -- train --model-file good.onnx --data data --loss cross-entropy
rb_case "--model and --model-file together" fail "excludes" --setup good \
  -- train --model gpt-tiny --model-file good.onnx
rb_case "--loss without --model-file" fail "requires --model-file|Needs" \
  -- train --loss cross-entropy
rb_finish
