#!/usr/bin/env python3
# The decode step's timeline from a timing build's trace (native/cuda/trace.cuh): reads
# <base>.<unit>.bin, groups the records by launch (%gridid, split where starts are 100 us apart: a graph
# node's replays share it), orders the launches by their first wait's return (a launch's wait returns
# once the launch before it has completed), cuts the last whole step
# (from one launch of a once-a-step kernel to the next) and prints, per launch position in a layer
# averaged over the middle layers, its blocks' times relative to the previous launch's last block end:
# first and last start, first and last wait return, median and last end, the longest block's time after
# its wait, and how many blocks started before that end. The sum of the last ends over a layer is the
# layer's time on the step's path.
#
# SSMKIT_TRACE=/tmp/tr/w4 node bench/model-gpu.mjs --dir /tmp/m64 --modes w4a16 --only-default \
#     --no-prefill --no-micro   (with SSMKIT_BINDING naming a -DSSMKIT_TRACE build)
# python3 bench/trace.py /tmp/tr/w4 [label] [unit:line of the step's first kernel] [--blocks]
#
# --blocks: for each launch of a layer with 100 blocks or more, how its blocks' ends spread: the
# percentiles of a block's time after its wait, the ends of the blocks that started before and after the
# previous launch's end, and per SM the latest end (mean over the middle layers): the slowest SMs, and
# how often the slowest ten of one layer are among the slowest ten of the next (a systematic tail
# repeats, a random one does not).
import collections
import glob
import os
import sys

import numpy as np

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'native', 'cuda')


def kernel_name(unit, line, _cache={}):
    """The __global__ function whose body holds `line` of native/cuda/<unit>.cu (its trace scope)."""
    if unit not in _cache:
        try:
            with open(os.path.join(SRC, unit + '.cu')) as f:
                _cache[unit] = f.read().split('\n')
        except OSError:
            _cache[unit] = []
    lines = _cache[unit]
    for i in range(min(line, len(lines)) - 1, -1, -1):
        if '__global__' in lines[i]:
            text = ' '.join(lines[i:i + 3])
            head = text.split('(')
            for part in head:
                words = part.replace(')', ' ').split()
                if words and words[-1].endswith('_kernel'):
                    return words[-1]
            return unit
    return unit


blocks_report = '--blocks' in sys.argv
argv = [a for a in sys.argv if a != '--blocks']
base = argv[1]
label = argv[2] if len(argv) > 2 else os.path.basename(base)
launches = collections.defaultdict(list)  # gridid -> records (start, wait, end, unit, line, sm)
for path in sorted(glob.glob(base + '.*.bin')):
    unit = path[len(base) + 1:-4].replace('.cu', '')
    with open(path, 'rb') as f:
        f.read(8)
        a = np.frombuffer(f.read(), dtype=np.uint64).reshape(-1, 4)
    for w0, s, w, e in a:
        w0 = int(w0)
        launches[w0 >> 32].append((int(s), int(w), int(e), unit, (w0 >> 16) & 0xFFFF, w0 & 0xFF))
# A graph node keeps its %gridid at every replay: a node's records split into launches where their starts
# are more than 100 us apart (a replay is a whole step later).
runs = []
for gid, recs in launches.items():
    recs.sort()
    cut = 0
    for i in range(1, len(recs) + 1):
        if i == len(recs) or recs[i][0] - recs[i - 1][0] > 100000:
            runs.append((gid, recs[cut:i]))
            cut = i
L = []
for gid, recs in runs:
    ws = [r[1] for r in recs if r[1]]
    if not ws:
        continue
    L.append(dict(gid=gid, recs=recs, key=(recs[0][3], recs[0][4]),
                  name='%s/%d' % (kernel_name(recs[0][3], recs[0][4]), len(recs)),
                  s0=min(r[0] for r in recs), s1=max(r[0] for r in recs), w0=min(ws), w1=max(ws),
                  e50=float(np.median([r[2] for r in recs])), e1=max(r[2] for r in recs),
                  post=max(r[2] - r[1] for r in recs if r[1]), sms=len(set(r[5] for r in recs))))
L.sort(key=lambda x: x['w0'])
if len(argv) > 3:
    u, ln = argv[3].split(':')
    first_key = (u, int(ln))
else:
    cnt = collections.Counter(x['key'] for x in L)
    first_key = min((c, k) for k, c in cnt.items() if c >= 3)[1]
marks = [i for i, x in enumerate(L) if x['key'] == first_key]
if len(marks) < 3:
    sys.exit('%s: fewer than three steps in the trace' % label)
step = L[marks[-3]:marks[-2]]
t0 = step[0]['w0']
keys = [x['key'] for x in step]
period = next((p for p in range(2, 16)
               if sum(keys[i] == keys[i + p] for i in range(len(keys) - p)) >= 0.9 * (len(keys) - p)), None)
print('== %s: a step of %d launches (from %s), %.1f us from its first wait to its last end; layer period %s'
      % (label, len(step), step[0]['name'], (max(x['e1'] for x in step) - t0) / 1e3, period))
rows = collections.OrderedDict()
for i in range(1, len(step)):
    x, pe = step[i], step[i - 1]['e1']
    d = dict(start=(x['s0'] - pe) / 1e3, lstart=(x['s1'] - pe) / 1e3, wait=(x['w0'] - pe) / 1e3,
             lwait=(x['w1'] - pe) / 1e3, end50=(x['e50'] - pe) / 1e3, end=(x['e1'] - pe) / 1e3,
             post=x['post'] / 1e3, early=sum(r[0] < pe for r in x['recs']), blocks=len(x['recs']), sms=x['sms'])
    d['recs'] = [(r[0] - pe, r[1] - pe, r[2] - pe, r[5]) for r in x['recs']]  # start, wait, end, sm
    if period and period <= i < len(step) - period:
        rows.setdefault(((i - 1) % period, x['name']), []).append(d)
print("us from the previous launch's last block end (middle layers' mean)")
print('%-26s %6s %5s %7s %7s %7s %7s %7s %7s %7s %6s %4s' % (
    'kernel/blocks', 'blocks', 'sms', 'start', 'lstart', 'wait', 'lwait', 'end50', 'end', 'post', 'early', 'n'))
tot = 0.0
for (pos, name), ds in sorted(rows.items()):
    m = {k: float(np.mean([d[k] for d in ds])) for k in ds[0] if k != 'recs'}
    tot += m['end']
    print('%-26s %6d %5d %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %6.0f %4d' % (
        name, m['blocks'], m['sms'], m['start'], m['lstart'], m['wait'], m['lwait'], m['end50'], m['end'],
        m['post'], m['early'], len(ds)))
print('a layer on the path: %.2f us' % tot)
print('the first launches, us from the step\'s first wait:')
for x in step[:2 * (period or 4) + 1]:
    print('  %-26s start %8.2f .. %8.2f  wait %8.2f .. %8.2f  end %8.2f (median) %8.2f' % (
        x['name'], (x['s0'] - t0) / 1e3, (x['s1'] - t0) / 1e3, (x['w0'] - t0) / 1e3, (x['w1'] - t0) / 1e3,
        (x['e50'] - t0) / 1e3, (x['e1'] - t0) / 1e3))

if blocks_report:
    print('blocks (us; the middle layers pooled): after the wait p0 p10 p50 p90 p100; ends of the blocks that '
          'started before / after the previous end (median, max); the slowest SMs')
    for (pos, name), ds in sorted(rows.items()):
        if ds[0]['blocks'] < 100:
            continue
        post = np.array([(r[2] - r[1]) / 1e3 for d in ds for r in d['recs'] if r[1]])
        early = np.array([r[2] / 1e3 for d in ds for r in d['recs'] if r[0] < 0])
        late = np.array([r[2] / 1e3 for d in ds for r in d['recs'] if r[0] >= 0])
        q = np.percentile(post, [0, 10, 50, 90, 100])
        print('%-26s after wait %s' % (name, ' '.join('%6.2f' % v for v in q)))
        for what, v in (('started before', early), ('started after', late)):
            if len(v):
                print('%-26s   %-15s %5d blocks, end %6.2f median, %6.2f max' % ('', what, len(v), np.median(v), v.max()))
        # Per SM, the latest end in each layer; its mean over the layers, and the slowest ten's overlap
        # from one layer to the next.
        per_layer = []
        for d in ds:
            last = collections.defaultdict(float)
            for r in d['recs']:
                last[r[3]] = max(last[r[3]], r[2] / 1e3)
            per_layer.append(last)
        sms = sorted(set(k for pl in per_layer for k in pl))
        mean_end = {sm: float(np.mean([pl.get(sm, np.nan) for pl in per_layer])) for sm in sms}
        slow = sorted(sms, key=lambda sm: -mean_end[sm])[:10]
        tops = [set(sorted(pl, key=lambda sm: -pl[sm])[:10]) for pl in per_layer]
        repeat = float(np.mean([len(a & b) / 10 for a, b in zip(tops, tops[1:])])) if len(tops) > 1 else 0.0
        print('%-26s   per SM latest end: mean %6.2f, sd %5.2f; slowest SMs %s (%s); top-10 repeat %.0f%%' % (
            '', np.nanmean(list(mean_end.values())), np.nanstd(list(mean_end.values())),
            ' '.join(str(sm) for sm in slow[:5]), ' '.join('%.2f' % mean_end[sm] for sm in slow[:5]), 100 * repeat))
