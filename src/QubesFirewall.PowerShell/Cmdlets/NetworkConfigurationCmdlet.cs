using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Configuration;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>What Test- and Invoke-QubeNetworkConfiguration share: the file, read as untrusted data.</summary>
public abstract class NetworkConfigurationCmdlet : QubeCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("FullName")]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>The file's format; default from its name (.json is JSON, anything else the .psd1 subset).</summary>
    [Parameter]
    public ConfigurationFormat? Format { get; set; }

    /// <summary>Reads and validates the file: size first (before reading), then the strict reader; errors name the file and line.</summary>
    protected bool TryReadConfiguration(out NetworkConfiguration configuration, out string path)
    {
        path = SessionState.Path.GetUnresolvedProviderPathFromPSPath(Path);
        var file = path;
        return TryEngine(() =>
        {
            try
            {
                var info = new FileInfo(file);
                if (!info.Exists)
                    throw new QubesFirewallException(ErrorIds.ConfigurationNotFound, FailureKind.ObjectNotFound, $"There is no file '{file}'.", file);
                if (info.Length > DataLimits.MaxBytes)
                    throw new QubesFirewallException(ErrorIds.ConfigurationTooLarge, FailureKind.InvalidData,
                        $"{file} is {info.Length} bytes; at most {DataLimits.MaxBytes} are read.", file);
                return ConfigurationReader.Read(File.ReadAllText(file), Format ?? ConfigurationReader.FormatOf(file));
            }
            catch (QubesFirewallException ex) when (ex.ErrorId is ErrorIds.InvalidConfiguration or ErrorIds.ConfigurationTooLarge && !ex.Message.StartsWith(file, StringComparison.Ordinal))
            {
                throw new QubesFirewallException(ex.ErrorId, ex.Kind, $"{file}: {ex.Message}", file);
            }
            catch (IOException ex)
            {
                throw new QubesFirewallException(ErrorIds.ConfigurationUnreadable, FailureKind.ResourceUnavailable, $"{file} cannot be read: {ex.Message}", file);
            }
            catch (UnauthorizedAccessException ex)
            {
                throw new QubesFirewallException(ErrorIds.ConfigurationUnreadable, FailureKind.PermissionDenied, $"{file} cannot be read: {ex.Message}", file);
            }
        }, out configuration);
    }
}
