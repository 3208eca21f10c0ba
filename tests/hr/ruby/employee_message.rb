# EmployeeMessage as the Ruby HR platform defines it (hr_platform/proto/employee.proto).
require "google/protobuf"

Google::Protobuf::DescriptorPool.generated_pool.build do
  add_file("hr_platform/proto/employee.proto", syntax: :proto3) do
    add_message "hr_platform.EmployeeMessage" do
      optional :guid, :string, 1
      optional :first_name, :string, 2
      optional :last_name, :string, 3
    end
  end
end

EmployeeMessage = Google::Protobuf::DescriptorPool.generated_pool
  .lookup("hr_platform.EmployeeMessage").msgclass
