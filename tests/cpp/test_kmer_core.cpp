// Unit tests of the torch-free k-mer core against a naive string-map tokenizer written from the definition.
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "kmer/core/kmer_core.h"

using namespace enigma_fast::kmer;

namespace {

const uint8_t* bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// A test vocabulary: a random subset of k-mers (ids 0..), the tail pieces of every length < k that appear in
// `tails`, and fallback ids for "ACGTNacgtn" after them.
struct Vocab {
  int k, stride;
  std::map<std::string, int64_t> pieces;
  std::vector<int32_t> dense, tail, chars;
  std::vector<int64_t> codes, ids;
  BaseLut lut;
  std::vector<int64_t> slots;
  int hbits = 0;
  // Open-addressing table of the (codes, ids) pairs, at most half full.
  void build_hash() {
    hbits = 1;
    while ((size_t(1) << hbits) < 2 * codes.size()) ++hbits;
    const uint64_t mask = (uint64_t(1) << hbits) - 1;
    slots.assign(size_t(2) << hbits, -1);
    for (size_t i = 0; i < codes.size(); ++i) {
      uint64_t h = hash_slot(static_cast<uint64_t>(codes[i]), hbits);
      while (slots[2 * h + 1] >= 0) h = (h + 1) & mask;
      slots[2 * h] = codes[i];
      slots[2 * h + 1] = ids[i];
    }
  }
  Lookup lookup(bool hashed) {
    Lookup v;
    v.k = k;
    v.stride = stride;
    v.lut = lut.code;
    if (hashed) {
      v.hash_slots = slots.data();
      v.hash_bits = hbits;
    } else {
      v.dense = dense.data();
    }
    v.tail = tail.empty() ? nullptr : tail.data();
    v.char_ids = chars.data();
    return v;
  }
};

Vocab make_vocab(std::mt19937& rng, int k, int stride, double keep, const std::vector<std::string>& tails) {
  Vocab v{k, stride, {}, {}, {}, std::vector<int32_t>(256, -1), {}, {}, make_base_lut(false), {}, 0};
  std::bernoulli_distribution coin(keep);
  int64_t next = 0;
  std::vector<uint64_t> picked;
  if (k <= 6) {
    for (uint64_t c = 0; c < (uint64_t(1) << (2 * k)); ++c)
      if (coin(rng)) picked.push_back(c);
  } else {
    std::uniform_int_distribution<uint64_t> any(0, code_mask(k));
    for (int i = 0; i < 300; ++i) picked.push_back(any(rng));
  }
  std::sort(picked.begin(), picked.end());
  picked.erase(std::unique(picked.begin(), picked.end()), picked.end());
  if (k <= kMaxDenseK) {
    v.dense.assign(static_cast<size_t>(dense_table_size(k)), -1);
    v.tail.assign(static_cast<size_t>(tail_table_size(k)), -1);
  }
  for (uint64_t c : picked) {
    if (k <= kMaxDenseK) v.dense[static_cast<size_t>(c)] = static_cast<int32_t>(next);
    v.codes.push_back(static_cast<int64_t>(c));
    v.ids.push_back(next);
    v.pieces[string_of(c, k)] = next++;
  }
  if (k <= kMaxDenseK) {
    for (const auto& t : tails) {
      if (t.empty() || static_cast<int>(t.size()) >= k || v.pieces.count(t)) continue;
      const int64_t code = code_of(bytes(t), static_cast<int64_t>(t.size()), v.lut);
      if (code < 0) continue;
      v.tail[static_cast<size_t>(tail_offset(static_cast<int64_t>(t.size())) + code)] = static_cast<int32_t>(next);
      v.pieces[t] = next++;
    }
  }
  v.build_hash();
  for (char ch : std::string("ACGTNacgtn")) v.chars[static_cast<uint8_t>(ch)] = static_cast<int32_t>(next++);
  return v;
}

// The definition, with std::map lookups.
std::vector<int64_t> naive_encode(const std::string& s, const Vocab& v, bool use_tail, int64_t missing_id) {
  std::vector<int64_t> out;
  const int64_t n = static_cast<int64_t>(s.size());
  const int64_t nw = num_windows(n, v.k, v.stride), c = cover(v.k, v.stride);
  for (int64_t w = 0; w < nw; ++w) {
    const auto it = v.pieces.find(s.substr(static_cast<size_t>(w * v.stride), static_cast<size_t>(v.k)));
    if (it != v.pieces.end())
      out.push_back(it->second);
    else if (missing_id >= 0)
      out.push_back(missing_id);
    else
      for (int64_t j = 0; j < c; ++j) out.push_back(v.chars[static_cast<uint8_t>(s[static_cast<size_t>(w * v.stride + j)])]);
  }
  const int64_t b = tail_begin(n, v.k, v.stride);
  const std::string tail = s.substr(static_cast<size_t>(b));
  const auto it = v.pieces.find(tail);
  if (!tail.empty() && use_tail && it != v.pieces.end())
    out.push_back(it->second);
  else
    for (char ch : tail) out.push_back(v.chars[static_cast<uint8_t>(ch)]);
  return out;
}

std::string random_dna(std::mt19937& rng, int64_t n, const std::string& alphabet) {
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::string s(static_cast<size_t>(n), 'A');
  for (auto& ch : s) ch = alphabet[pick(rng)];
  return s;
}

void test_lut_and_codes() {
  const BaseLut keep = make_base_lut(false), fold = make_base_lut(true);
  EF_EXPECT(keep.code['A'] == 0 && keep.code['C'] == 1 && keep.code['G'] == 2 && keep.code['T'] == 3);
  EF_EXPECT(keep.code['a'] == kBad && keep.code['N'] == kBad && keep.code[0] == kBad && keep.code[255] == kBad);
  EF_EXPECT(fold.code['a'] == 0 && fold.code['t'] == 3 && fold.code['n'] == kBad);
  EF_EXPECT(code_of(bytes("ACGT"), 4, keep) == 0b00011011);
  EF_EXPECT(code_of(bytes("acgt"), 4, keep) == -1);
  EF_EXPECT(code_of(bytes("acgt"), 4, fold) == 0b00011011);
  EF_EXPECT(string_of(0b00011011, 4) == "ACGT");
  const std::string t32 = "TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT";
  EF_EXPECT(string_of(~uint64_t(0), 32) == t32);
  EF_EXPECT(num_windows(0, 3, 3) == 0 && num_windows(2, 3, 3) == 0 && num_windows(3, 3, 3) == 1);
  EF_EXPECT(num_windows(10, 3, 3) == 3 && tail_begin(10, 3, 3) == 9);
  EF_EXPECT(num_windows(10, 3, 1) == 8 && tail_begin(10, 3, 1) == 8);
  EF_EXPECT(num_windows(10, 2, 5) == 2 && tail_begin(10, 2, 5) == 10);
  EF_EXPECT(tail_offset(1) == 0 && tail_offset(2) == 4 && tail_offset(3) == 20 && tail_table_size(3) == 20);
}

void test_encode_matches_naive() {
  std::mt19937 rng(1234);
  const std::vector<int64_t> lengths = {0, 1, 2, 5, 7, 31, 64, 129, 1000};
  for (int k : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 20, 31, 32}) {
    for (int stride : {1, 2, 3, k, k + 1, 2 * k + 3}) {
      if (k == 12 && stride != k) continue;  // the 64 MiB table once is enough
      std::vector<std::string> tails;
      for (int l = 1; l < std::min(k, 4); ++l) tails.push_back(random_dna(rng, l, "ACGT"));
      Vocab v = make_vocab(rng, k, stride, 0.7, tails);
      for (int64_t n : lengths) {
        for (const std::string alphabet : {"ACGT", "ACGTNacgt"}) {
          std::string s = random_dna(rng, n, alphabet);
          // Plant vocabulary k-mers so lookups hit for large k too.
          if (!v.codes.empty())
            for (int64_t i = 0; i + k <= n; i += 3 * k)
              s.replace(static_cast<size_t>(i), static_cast<size_t>(k),
                        string_of(static_cast<uint64_t>(v.codes[static_cast<size_t>(i) % v.codes.size()]), k));
          if (n > 0 && n % 3 == 0) s.replace(static_cast<size_t>(n - 1), 1, tails.empty() ? "A" : tails[0].substr(0, 1));
          for (bool hashed : {false, true}) {
            if (!hashed && k > kMaxDenseK) continue;
            for (int variant = 0; variant < 4; ++variant) {
              const int64_t missing_id = variant % 2 ? 9999 : -1;
              Lookup lk = v.lookup(hashed);
              lk.missing_id = missing_id;
              if (variant >= 2) lk.pair_lut = pair_lut(false);  // the two-bytes-per-lookup path
              std::vector<int64_t> got;
              const Status st = encode<int64_t>(bytes(s), n, lk, got);
              EF_EXPECT(st.ok);
              const auto want = naive_encode(s, v, k <= kMaxDenseK, missing_id);
              EF_EXPECT(got == want);
              std::vector<int32_t> got32;
              EF_EXPECT(encode<int32_t>(bytes(s), n, lk, got32).ok);
              EF_EXPECT(std::equal(got32.begin(), got32.end(), want.begin(), want.end()));
              // Chunked window passes agree with one pass (the CPU op splits windows across threads).
              const int64_t nw = num_windows(n, k, stride);
              std::vector<int64_t> one(static_cast<size_t>(nw)), parts(static_cast<size_t>(nw));
              const int64_t m1 = encode_windows<int64_t>(bytes(s), n, lk, 0, nw, one.data());
              int64_t m2 = 0;
              for (int64_t w = 0; w < nw; w += 7)
                m2 += encode_windows<int64_t>(bytes(s), n, lk, w, std::min(nw, w + 7), parts.data() + w);
              EF_EXPECT(m1 == m2 && one == parts);
              // The general map path gives the same tokens.
              PieceMap pm;
              for (const auto& [p, id] : v.pieces) pm.insert(p, id);
              std::vector<int64_t> gen;
              EF_EXPECT(encode_general(bytes(s), n, k, stride, pm, v.chars.data(), missing_id, gen).ok);
              if (k <= kMaxDenseK) EF_EXPECT(gen == want);
            }
          }
        }
      }
    }
  }
}

void test_round_trip_and_decode() {
  std::mt19937 rng(99);
  for (int k : {1, 3, 5, 6, 12}) {
    for (int stride : {1, 2, k}) {
      if (stride > k) continue;
      Vocab v = make_vocab(rng, k, stride, 0.5, {"AC", "G"});
      // Pieces table: each id decodes to its first c bytes (k-mers), the whole piece (tails), or its byte.
      const int64_t c = cover(k, stride);
      const int64_t vocab = static_cast<int64_t>(v.pieces.size()) + 10;
      std::vector<std::string> by_id(static_cast<size_t>(vocab));
      for (const auto& [p, id] : v.pieces)
        by_id[static_cast<size_t>(id)] = static_cast<int>(p.size()) == k ? p.substr(0, static_cast<size_t>(c)) : p;
      for (int ch = 0; ch < 256; ++ch)
        if (v.chars[static_cast<size_t>(ch)] >= 0) by_id[static_cast<size_t>(v.chars[static_cast<size_t>(ch)])] = std::string(1, char(ch));
      std::string flat;
      std::vector<int64_t> offsets = {0};
      for (const auto& p : by_id) {
        flat += p;
        offsets.push_back(static_cast<int64_t>(flat.size()));
      }
      for (int64_t n : {0, 1, 4, 17, 300}) {
        const std::string s = random_dna(rng, n, "ACGTNacgtn");
        std::vector<int64_t> ids;
        EF_EXPECT(encode<int64_t>(bytes(s), n, v.lookup(false), ids).ok);
        int64_t bad = -1;
        const int64_t len = decoded_length(ids.data(), static_cast<int64_t>(ids.size()), offsets.data(), vocab, &bad);
        EF_EXPECT(len == n);
        std::string back(static_cast<size_t>(std::max<int64_t>(len, 0)), '?');
        decode(ids.data(), static_cast<int64_t>(ids.size()), bytes(flat), static_cast<int64_t>(flat.size()),
               offsets.data(), reinterpret_cast<uint8_t*>(back.data()), reinterpret_cast<uint8_t*>(back.data()) + back.size());
        EF_EXPECT(back == s);
        // Padded pieces take the 8-byte copies; nothing is written past out_end.
        const std::string padded = flat + std::string(8, '\0');
        std::string canary(static_cast<size_t>(std::max<int64_t>(len, 0)) + 16, '#');
        uint8_t* o = reinterpret_cast<uint8_t*>(canary.data());
        decode(ids.data(), static_cast<int64_t>(ids.size()), bytes(padded), static_cast<int64_t>(padded.size()),
               offsets.data(), o, o + len);
        EF_EXPECT(canary.substr(0, static_cast<size_t>(len)) == s);
        EF_EXPECT(canary.substr(static_cast<size_t>(len)) == std::string(16, '#'));
      }
      const std::vector<int64_t> out_of_range = {0, vocab, 1};
      int64_t bad = -1;
      EF_EXPECT(decoded_length(out_of_range.data(), 3, offsets.data(), vocab, &bad) == -1 && bad == 1);
      const std::vector<int64_t> negative = {-1};
      EF_EXPECT(decoded_length(negative.data(), 1, offsets.data(), vocab, &bad) == -1 && bad == 0);
    }
  }
}

void test_hash_table() {
  // A full table (no empty slot) still terminates; a missing code is -1; codes past 2^63 work.
  std::vector<int64_t> codes = {5, static_cast<int64_t>(~uint64_t(0)), 9, 11}, ids = {0, 1, 2, 3};
  std::vector<int64_t> slots(8, -1);
  for (size_t i = 0; i < 4; ++i) {
    uint64_t h = hash_slot(static_cast<uint64_t>(codes[i]), 2);
    while (slots[2 * h + 1] >= 0) h = (h + 1) & 3u;
    slots[2 * h] = codes[i];
    slots[2 * h + 1] = ids[i];
  }
  for (size_t i = 0; i < 4; ++i) EF_EXPECT(find_hashed(slots.data(), 2, codes[i]) == ids[i]);
  EF_EXPECT(find_hashed(slots.data(), 2, 6) == -1);
  const int64_t one[2] = {42, 7}, empty[2] = {42, -1};
  EF_EXPECT(find_hashed(one, 0, 42) == 7 && find_hashed(one, 0, 41) == -1);
  EF_EXPECT(find_hashed(empty, 0, 42) == -1);
}

void test_pair_lut() {
  for (bool fold : {false, true}) {
    const uint8_t* t = pair_lut(fold);
    const BaseLut l = make_base_lut(fold);
    for (unsigned x = 0; x < 65536; ++x) {
      const unsigned a = l.code[x & 255u], b = l.code[x >> 8];
      if ((a | b) & kBad)
        EF_EXPECT(t[x] == kPairBad);
      else
        EF_EXPECT(t[x] == ((a << 2) | b));
    }
    // The single-byte entries after the pairs: the code, or kPairBad for a byte that is not a base.
    for (unsigned x = 0; x < 256; ++x)
      EF_EXPECT(t[65536 + x] == ((l.code[x] & kBad) ? kPairBad : l.code[x]));
  }
  // Folded lower case reads like upper case through the pair path too.
  Lookup v;
  std::vector<int32_t> dense(1024), chars(256, -1);
  for (int i = 0; i < 1024; ++i) dense[static_cast<size_t>(i)] = i;
  const BaseLut fold = make_base_lut(true);
  v.k = 5;
  v.stride = 5;
  v.lut = fold.code;
  v.pair_lut = pair_lut(true);
  v.dense = dense.data();
  v.char_ids = chars.data();
  const std::string s = "acgtaCGTAAttttt" "GGGGG" "cccccAAAAA";
  std::vector<int64_t> ids;
  EF_EXPECT(encode<int64_t>(bytes(s), static_cast<int64_t>(s.size()), v, ids).ok);
  EF_EXPECT(ids.size() == 6 && ids[0] == code_of(bytes("ACGTA"), 5, fold) && ids[2] == 1023 && ids[3] == 682 &&
            ids[4] == 341 && ids[5] == 0);
}

void test_bad_bytes() {
  std::mt19937 rng(7);
  Vocab v = make_vocab(rng, 4, 4, 0.0, {});  // empty vocabulary: everything goes through the fallback
  const std::string s = "ACGTAC\x01TACGT";
  std::vector<int64_t> ids;
  Status st = encode<int64_t>(bytes(s), static_cast<int64_t>(s.size()), v.lookup(false), ids);
  EF_EXPECT(!st.ok && st.position == 6 && st.byte == 1 && ids.empty());
  const std::string tail_bad = "ACGTA#";
  st = encode<int64_t>(bytes(tail_bad), 6, v.lookup(false), ids);
  EF_EXPECT(!st.ok && st.position == 5 && st.byte == '#');
  // Under the UNK policy a bad byte inside a window is absorbed by the window's missing id; in the tail it is not.
  Lookup lk = v.lookup(false);
  lk.missing_id = 77;
  st = encode<int64_t>(bytes(s), static_cast<int64_t>(s.size()), lk, ids);
  EF_EXPECT(st.ok && ids == std::vector<int64_t>({77, 77, 77}));
  st = encode<int64_t>(bytes(tail_bad), 6, lk, ids);
  EF_EXPECT(!st.ok && st.position == 5 && st.byte == '#');
  const std::string tail_ok = "ACGTAc";
  st = encode<int64_t>(bytes(tail_ok), 6, lk, ids);
  EF_EXPECT(st.ok && ids == std::vector<int64_t>({77, v.chars['A'], v.chars['c']}));
}

// A sequence with a byte without a token in a window and another in its tail: every report names the window's
// (the first in sequence order), also first_error() given the tail's own failed status, whatever the stride.
void test_bad_bytes_in_order() {
  std::mt19937 rng(11);
  for (int stride : {3, 2, 1}) {
    Vocab v = make_vocab(rng, 3, stride, 0.5, {});
    const Lookup lk = v.lookup(false);
    const std::string s = "ACGTA!GTACGTA#";  // '!' at 5 in the body, '#' at 13 in the tail "A#" (k = 3)
    const int64_t n = static_cast<int64_t>(s.size());
    std::vector<int64_t> tail(3), ids;
    Status tail_st;
    EF_EXPECT(encode_tail<int64_t>(bytes(s), n, lk, tail.data(), tail_st) < 0);  // windows end at 12
    EF_EXPECT(!tail_st.ok && tail_st.position == 13 && tail_st.byte == '#');
    const Status st = first_error(bytes(s), n, lk, tail_st);
    EF_EXPECT(!st.ok && st.position == 5 && st.byte == '!');
    const Status whole = encode<int64_t>(bytes(s), n, lk, ids);
    EF_EXPECT(!whole.ok && whole.position == 5 && whole.byte == '!');
    // Without the body's bad byte the tail's report stands.
    const std::string t = "ACGTACGTACGTA#";
    EF_EXPECT(first_error(bytes(t), 14, lk, Status{false, 13, '#'}).position == 13);
    EF_EXPECT(first_error(bytes(t), 14, lk, Status{}).ok);
  }
}

void test_count() {
  const std::string s = "ACGTACGTNNACGTTTTTAC";  // windows of 4: ACGT ACGT NNAC GTTT TTAC
  const BaseLut lut = make_base_lut(false);
  std::vector<int64_t> counts(256, 0), first(256, -1);
  int64_t other = 0;
  count_kmers(bytes(s), static_cast<int64_t>(s.size()), 4, 4, lut, counts.data(), first.data(), &other);
  const auto at = [&](const char* km) { return static_cast<size_t>(code_of(bytes(km), 4, lut)); };
  EF_EXPECT(counts[at("ACGT")] == 2 && first[at("ACGT")] == 0);
  EF_EXPECT(counts[at("GTTT")] == 1 && first[at("GTTT")] == 3);
  EF_EXPECT(counts[at("TTAC")] == 1 && first[at("TTAC")] == 4);
  EF_EXPECT(other == 1);
  int64_t total = 0;
  for (auto c : counts) total += c;
  EF_EXPECT(total == 4);
}

}  // namespace

EF_TEST_MAIN({
  test_lut_and_codes();
  test_encode_matches_naive();
  test_round_trip_and_decode();
  test_hash_table();
  test_pair_lut();
  test_bad_bytes();
  test_bad_bytes_in_order();
  test_count();
})
