using System.Globalization;

namespace QubesFirewall.Engine.Trust;

/// <summary>
/// How much a qube may answer: a file read back (a hook file: 1 MiB) and the output or error output of a
/// command or script (64 KiB each). Settable per backend, and from the environment
/// (<c>$env:QUBESFW_QUBE_FILE_LIMIT</c>, <c>$env:QUBESFW_QUBE_OUTPUT_LIMIT</c>, in bytes).
/// </summary>
public sealed record QubeAnswerLimits
{
    public const long DefaultFileBytes = 1L << 20;
    public const long DefaultOutputBytes = 64L << 10;
    public const string FileVariable = "QUBESFW_QUBE_FILE_LIMIT";
    public const string OutputVariable = "QUBESFW_QUBE_OUTPUT_LIMIT";

    /// <summary>A file of a qube read back (standard output of the fixed read command).</summary>
    public long FileBytes { get; init; } = DefaultFileBytes;

    /// <summary>Output and error output of a command or script run in a qube, each.</summary>
    public long OutputBytes { get; init; } = DefaultOutputBytes;

    /// <summary>The limits the environment sets (a value that is not a positive whole number is refused by name).</summary>
    public static QubeAnswerLimits FromEnvironment(Func<string, string?> environment) => new()
    {
        FileBytes = Read(environment, FileVariable, DefaultFileBytes),
        OutputBytes = Read(environment, OutputVariable, DefaultOutputBytes),
    };

    private static long Read(Func<string, string?> environment, string name, long fallback)
    {
        var text = environment(name);
        if (string.IsNullOrEmpty(text)) return fallback;
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value is < 1 or > int.MaxValue)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidQubeAnswerLimit,
                $"$env:{name} is '{QubeText.Escape(text)}'; give a number of bytes from 1 to {int.MaxValue.ToString(CultureInfo.InvariantCulture)}.", text);
        return value;
    }
}

/// <summary>What a command in a qube may answer on each stream, and what it was asked to do (for the error).</summary>
public sealed record QubeAnswerLimit(long StandardOutputBytes, long StandardErrorBytes, string What)
{
    /// <summary>Reading a file: the file's size on standard output, the output cap on error output.</summary>
    public static QubeAnswerLimit File(QubeAnswerLimits limits, string path) => new(limits.FileBytes, limits.OutputBytes, $"read {path}");

    /// <summary>Running a command or script: the output cap on both streams.</summary>
    public static QubeAnswerLimit Output(QubeAnswerLimits limits, string what) => new(limits.OutputBytes, limits.OutputBytes, what);
}

/// <summary>
/// The one bounded reader of everything a qube answers: copies a stream into memory up to a cap and stops
/// reading at the first byte over it (the caller then kills the process), so a qube answering without end
/// costs dom0 at most the cap plus one buffer.
/// </summary>
public sealed class BoundedReader(long cap)
{
    private const int BufferSize = 16 * 1024;
    private readonly MemoryStream _data = new();

    public long Cap { get; } = cap;

    /// <summary>True once more than <see cref="Cap"/> bytes arrived (the bytes over it were not kept).</summary>
    public bool Exceeded { get; private set; }

    /// <summary>The bytes read (at most <see cref="Cap"/>).</summary>
    public byte[] ToArray() => _data.ToArray();

    /// <summary>Reads <paramref name="source"/> to its end; false (and stops) as soon as it gives more than the cap.</summary>
    public async Task<bool> ReadAsync(Stream source, CancellationToken cancellationToken)
    {
        var buffer = new byte[BufferSize];
        while (true)
        {
            var n = await source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            if (n == 0) return true;
            if (_data.Length + n > Cap)
            {
                _data.Write(buffer, 0, (int)(Cap - _data.Length));
                Exceeded = true;
                return false;
            }
            _data.Write(buffer, 0, n);
        }
    }

    /// <summary>The error for an answer over the cap: which qube, what it was asked, which stream, the cap.</summary>
    public static QubesFirewallException TooLarge(string vmName, string what, string stream, long cap) =>
        new(ErrorIds.QubeAnswerTooLarge, FailureKind.InvalidData,
            $"'{vmName}' answered more than {Size(cap)} on its {stream} when asked to {what}; qvm-run was stopped there, the answer was not used and nothing was written. " +
            $"A compromised or broken qube can answer without end: look at that file in '{vmName}'. If it really is that large, raise the limit ($env:{(stream == "output" && what.StartsWith("read ", StringComparison.Ordinal) ? QubeAnswerLimits.FileVariable : QubeAnswerLimits.OutputVariable)}, in bytes).",
            vmName);

    private static string Size(long bytes) => bytes % (1 << 20) == 0 ? $"{(bytes >> 20).ToString(CultureInfo.InvariantCulture)} MiB"
        : bytes % 1024 == 0 ? $"{(bytes >> 10).ToString(CultureInfo.InvariantCulture)} KiB"
        : $"{bytes.ToString(CultureInfo.InvariantCulture)} bytes";
}

/// <summary>The permission bits a qube reports for one of its files (<c>stat -c %a</c>): 3 or 4 octal digits, nothing else.</summary>
public static class QubeFileModes
{
    public static UnixFileMode Parse(string answer, string vmName, string path)
    {
        var text = answer.EndsWith('\n') ? answer[..^1] : answer;
        if (text.Length is < 3 or > 4 || !text.All(c => c is >= '0' and <= '7'))
            throw new QubesFirewallException(ErrorIds.QubeAnswerInvalid, FailureKind.InvalidData,
                $"'{vmName}' answered '{QubeText.Escape(text.Length > 40 ? text[..40] + "..." : text)}' when asked for the mode of {path}, which is not a file mode (3 or 4 octal digits); nothing was written.", vmName);
        return (UnixFileMode)Convert.ToInt32(text, 8);
    }
}
