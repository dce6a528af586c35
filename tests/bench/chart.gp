# SPDX-License-Identifier: MIT
# The chart of docs/benchmarks.md: throughput and round-trip latency of every
# mechanism, log scale. Usage: gnuplot -e "datafile='F'; outfile='O'" chart.gp
set terminal pngcairo size 1400,620 noenhanced font "sans,10" background rgb "white"
set output outfile
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set grid ytics mytics
set xtics rotate by 45 right nomirror
set bmargin 7
set format y "%.0s%c"
set key top right
set multiplot layout 1,2 title "mailboxfs and its peers (medians; missing bars: n/a)"
set title "Throughput, one producer and one consumer (higher is better)"
set ylabel "messages/s"
set yrange [1:*]
plot datafile using 2:xtic(1) title "64 B", '' using 3 title "4 KiB", '' using 4 title "1 MiB"
set title "64-byte round trip (lower is better)"
set ylabel "microseconds"
set format y "%g"
set yrange [0.1:*]
plot datafile using 5:xtic(1) title "median", '' using 6 title "p99"
unset multiplot
